"""What a hands-on tester found driving the real window, pinned down: V makes the model's pixels
the person's, bucket fill respects who decided, the cursor readout never goes stale, long
messages end at a word, pre-label counts and Resume, the file list's selected icon, the draft
chip, actions without a folder or a model, versions name their base, and Improve model's
checks, refusals and result dialog."""

import pytest
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QColor, QIcon, QMouseEvent, QPainter, QPixmap
from PySide6.QtWidgets import QApplication, QStatusBar

from chimera_app.editing import tools
from chimera_app.project.document import ImageState, Provenance
from chimera_app.service.finetune_runner import FinetuneOutcome, FinetuneRefusal, classify_exit
from chimera_app.service.requests import PrelabelSummary
from chimera_app.service.versions import ModelVersion
from chimera_app.ui.file_list import STATE_COLORS, state_icon
from chimera_app.ui.improve_model import ImproveModelDialog, precheck
from chimera_app.ui.main_window import MainWindow
from chimera_app.ui.status_bar import elide_words
from chimera_engine.formats.model_versions import MIN_VERIFIED_IMAGES
from tests.chimera_app.test_main_window import WAIT, messages, open_window, write_images  # noqa: F401 (fixture)
from tests.chimera_app.test_session import box, prediction, project, session  # noqa: F401 (fixtures)


@pytest.fixture
def window(qtbot, tmp_path, messages):  # noqa: F811
    w = open_window(qtbot, write_images(tmp_path / "images"))
    yield w
    w.close()


# -- 3. V: "this image is right" -----------------------------------------------------------------
def test_verified_accepts_the_models_pixels_as_the_persons(session):  # noqa: F811
    road, car = session.project.classes.ids()
    session.set_prediction(*prediction(road))  # left half road (model), right half unlabeled
    session.active_class = car
    session.paint(box(0, 40, 8, 48))
    patch = session.mark_verified(True)
    doc = session.doc
    assert doc.state == ImageState.VERIFIED
    assert (doc.provenance[:, :32] == Provenance.HUMAN).all()  # the model's road: the person's now
    assert (doc.labels[:, :32] == road).all() and (doc.labels[:8, 40:48] == car).all()
    assert (doc.provenance[20:, 32:] == Provenance.NONE).all()  # what the model left unlabeled stays undecided
    assert int(((patch.prov_before == Provenance.MODEL) & (patch.prov_after == Provenance.HUMAN)).sum()) == 48 * 32
    session.set_prediction(*prediction(car))  # a re-prediction never changes a verified image's decided pixels
    assert (doc.labels[:, :32] == road).all()

    # V again right away takes that V back, accepted pixels included.
    session.mark_verified(False)
    assert doc.state == ImageState.IN_PROGRESS and (doc.provenance[:, :32] != Provenance.HUMAN).all()
    # V, an edit, then V: not verified any more, but what the person accepted stays theirs.
    session.mark_verified(True)
    session.paint(box(30, 40, 34, 44))
    session.mark_verified(False)
    assert doc.state == ImageState.IN_PROGRESS and (doc.provenance[:, :32] == Provenance.HUMAN).all()


def test_v_in_the_window_says_how_many_pixels_it_accepted(window):
    doc = window.session.doc
    model_pixels = int((doc.provenance == Provenance.MODEL).sum())
    said = []
    window.controller.message.connect(said.append)
    window.actions_by_name["toggle_verified"].trigger()
    assert doc.state == ImageState.VERIFIED and not (doc.provenance == Provenance.MODEL).any()
    assert said[-1].startswith(f"{window.session.rel} verified; its {model_pixels:,} model pixels count as yours")


# -- 12. bucket fill and who decided ------------------------------------------------------------
def test_fill_stops_at_pixels_a_person_decided_and_makes_the_model_region_the_persons(session):  # noqa: F811
    road, car = session.project.classes.ids()
    session.set_prediction(*prediction(road))  # left half road, by the model
    session.active_class = road
    session.paint(box(0, 10, 48, 12))  # a person's road line across the model's road
    doc = session.doc
    region = tools.flood(doc.labels, 2, 5, doc.provenance)
    assert region.mask.sum() == 48 * 10  # the model's road left of the line only
    assert tools.flood(doc.labels, 2, 5).mask.sum() == 48 * 32  # without provenance: through the line
    # Filling with the class it already has: nothing changes colour, but the person decided it.
    session.paint(region)
    assert (doc.provenance[:, :10] == Provenance.HUMAN).all() and (doc.labels[:, :10] == road).all()
    assert (doc.provenance[:, 12:32] == Provenance.MODEL).all()
    # A fill started on the person's line stays inside the person's pixels.
    assert tools.flood(doc.labels, 11, 5, doc.provenance).mask.sum() == 48 * 12


# -- 5. the cursor readout ----------------------------------------------------------------------
def _hover(window, x, y):
    pos = window.canvas.map_from_image(x, y)
    event = QMouseEvent(QEvent.Type.MouseMove, pos, window.canvas.viewport().mapToGlobal(pos),
                        Qt.MouseButton.NoButton, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window.canvas.viewport(), event)


def test_the_cursor_readout_follows_edits_images_and_leaving(window, qtbot):
    label = window.status.cursor_label
    _hover(window, 20.5, 20.5)
    assert label.text().endswith("x 20  y 20") and "· model" in label.text()
    window.class_panel.select_key(2)
    window.set_tool("fill")
    window.canvas.fill_requested.emit(20.5, 20.5)  # the pointer does not move
    assert label.text().startswith(f"{window.project.classes.at_key(2).name} · person"), label.text()
    window.actions_by_name["undo"].trigger()
    assert "· model" in label.text()

    first = window.session.rel
    window.actions_by_name["next_image"].trigger()  # another image under the same pointer
    assert window.session.rel != first and "·" not in label.text()  # not the previous image's pixel
    qtbot.waitUntil(lambda: "· model" in label.text(), timeout=WAIT)  # its own prediction, read again

    window.canvas.leaveEvent(QEvent(QEvent.Type.Leave))
    assert label.text() == ""


# -- 9. long messages ---------------------------------------------------------------------------
def test_long_messages_end_at_a_word_before_the_permanent_widgets(window):
    assert elide_words("one two three", lambda t: len(t) <= 9) == "one two…"
    assert elide_words("short", lambda t: True) == "short"
    window.resize(700, 500)
    text = ("Improve model: Cannot improve the model. Improve model learns from the images a person verified: "
            "1 is verified, and it needs at least 3 (one is held out to measure the result)")
    bar = window.statusBar()
    bar.showMessage(text, 5000)
    shown = QStatusBar.currentMessage(bar)  # what is painted
    assert shown != text and shown.endswith("…") and text.startswith(shown[:-1].rstrip(",:"))
    assert text[len(shown[:-1].rstrip(",:"))] in " ,:"  # cut between words
    assert bar.fontMetrics().horizontalAdvance(shown) <= bar.message_width()
    assert bar.toolTip() == text and bar.currentMessage() == text  # the message itself is whole
    window.resize(1400, 500)
    QApplication.processEvents()
    assert len(QStatusBar.currentMessage(bar)) > len(shown)  # wider: more of it, fitted again
    bar.showMessage("Saved", 2000)
    assert bar.currentMessage() == "Saved" == QStatusBar.currentMessage(bar) and bar.toolTip() == ""


# -- 10, 13, 14. pre-label wording and the actions on offer ------------------------------------
def test_prelabel_counts_in_words_and_resume_only_when_something_is_left(window, qtbot):
    actions, said = window.actions_by_name, []
    window.controller.message.connect(said.append)
    assert not actions["resume_prelabel"].isEnabled()
    window.controller._on_prelabel_finished(PrelabelSummary(1, 1, (), False, ()))
    assert said[-1] == "Pre-label finished: 1 image" and not actions["resume_prelabel"].isEnabled()
    window.controller._prelabel_remaining = ["img2.png"]  # a cancelled run left one
    window.controller._on_prelabel_finished(PrelabelSummary(3, 2, (), True, ("img2.png",)))
    assert said[-1] == "Pre-label cancelled: 2 images" and actions["resume_prelabel"].isEnabled()


def test_the_draft_chip_goes_once_the_class_is_added(window, qtbot):
    panel = window.class_panel
    qtbot.keyClicks(panel.entry, "hexagon")
    qtbot.waitUntil(lambda: window.status.draft_swatch.isVisible(), timeout=WAIT)
    qtbot.keyClick(panel.entry, Qt.Key.Key_Return)
    assert window.project.classes.find("hexagon") is not None and not window.status.draft_swatch.isVisible()


def test_without_a_folder_or_a_model_nothing_that_needs_one_is_offered(qtbot, tmp_path, messages):  # noqa: F811
    window = MainWindow(device="cpu")
    qtbot.addWidget(window)
    window.show()
    a = window.actions_by_name
    needs_a_folder = ("improve_model", "cancel_prelabel", "prelabel", "resume_prelabel", "reprelabel")
    assert not any(a[name].isEnabled() for name in needs_a_folder)  # the welcome page
    window.model_in_use = None
    assert window.open_project(write_images(tmp_path / "images", n=1), model="clip:no-such-arch/none")
    qtbot.waitUntil(lambda: "failed" in window.status.model_label.text() or "no model" in
                    window.status.model_label.text(), timeout=WAIT)
    assert not a["improve_model"].isEnabled() and a["prelabel"].isEnabled() and not a["cancel_prelabel"].isEnabled()
    window.load_model("clip:chimera-tiny/random")
    qtbot.waitUntil(lambda: window.model_in_use is not None, timeout=WAIT)
    assert a["improve_model"].isEnabled()
    window.close_project()
    assert not any(a[name].isEnabled() for name in needs_a_folder)
    window.close()


# -- 11. the selected row's state icon ----------------------------------------------------------
def test_the_state_icon_shows_on_the_selected_rows_highlight():
    highlight = QColor(STATE_COLORS[ImageState.PREDICTED])  # the worst case: a blue dot on blue
    for state in ImageState:
        canvas = QPixmap(12, 12)
        canvas.fill(highlight)
        painter = QPainter(canvas)
        painter.drawPixmap(0, 0, state_icon(state).pixmap(12, 12, QIcon.Mode.Selected))
        painter.end()
        image = canvas.toImage()
        differ = sum(1 for x in range(12) for y in range(12)
                     if abs(QColor(image.pixel(x, y)).lightness() - highlight.lightness()) > 60)
        assert differ >= 20, state


# -- 6. versions name their base ----------------------------------------------------------------
def test_a_versions_entry_names_the_model_it_came_from(tmp_path):
    def version(base):
        return ModelVersion("v2", tmp_path / "v2.safetensors", None, 0.5, base, 3, 1, {})

    assert version("shapes-chimera").label() == "v2 · from shapes-chimera · α 0.5"
    assert version(str(tmp_path / ".chimera" / "models" / "v1.safetensors")).base_text() == "v1"
    assert version(str(tmp_path / "runs" / "model.safetensors")).base_text() == "model.safetensors"


# -- 2, 4, 7, 8. Improve model ------------------------------------------------------------------
def test_improve_model_refuses_in_the_app_without_starting_the_trainer(window):
    assert MIN_VERIFIED_IMAGES == 3
    assert "no model is in use" in precheck(window.project, None).lower()
    window.actions_by_name["toggle_verified"].trigger()  # 1 of 3 verified
    window.actions_by_name["improve_model"].trigger()
    dialog = window.improve_model.dialog
    assert window.improve_model.client.runner is None  # no trainer was started
    assert dialog.isVisible() and dialog.stage.text() == "Cannot improve the model"
    text = dialog.summary.text()
    assert "1 is verified, and it needs at least 3" in text and "press V" in text
    assert "chimera-app" not in text and "--" not in text and not dialog.skip_button.isVisible()


def test_a_refusal_for_empty_classes_offers_to_improve_without_them(qtbot):
    dialog = ImproveModelDialog()
    qtbot.addWidget(dialog)
    dialog.show()
    refusal = FinetuneRefusal("empty_classes", {"classes": ["triangle"], "nowhere": [], "all_classes": False,
                                                "held_out": ["img03.png"], "train_images": 3})
    outcome = classify_exit(1, "", ["chimera-train: no person-decided pixels of 'triangle' ... pass "
                                    "--skip-empty-classes"], False, False, refusal)
    dialog.show_outcome(outcome)
    text = dialog.summary.text()
    assert "'triangle'" in text and "img03.png was held out to measure the result" in text
    assert "--skip-empty-classes" not in text and "3 verified images used for training" in text
    assert dialog.skip_button.isVisible()
    asked = []
    dialog.retry_requested.connect(asked.append)
    dialog.skip_button.click()
    assert asked == [["--skip-empty-classes"]]


def test_the_result_dialog_words_fit_and_stopping_drops_the_eta(qtbot):
    from chimera_app.service.finetune_runner import FinetuneProgress

    dialog = ImproveModelDialog()
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.set_progress(FinetuneProgress("train", 10, 400, 5.0, 120.0))
    assert dialog.eta.text()
    dialog.set_stopping(training_started=True)
    assert dialog.eta.text() == "" and dialog.stage.text().startswith("Stopping…")
    cancelled = classify_exit(130, "", [], True, True)
    dialog.show_outcome(cancelled)
    assert dialog.stage.text() == "Cancelled" and "Cancelled" not in dialog.summary.text()

    classes = ["background", "circle", "square", "triangle", "star", "heart"]
    side = {"mIoU": 0.4, "pixels_to_change_per_image": 1000.0, "per_class_iou": {c: 0.5 for c in classes}}
    result = {"version": "v1", "train_images": 1, "iterations": 200, "held_out_images": ["img03.png"],
              "alpha": 0.75, "alpha_rule": "smallest α within 0.01 decided_accuracy of the best on the held-out images",
              "classes": classes, "before": side, "after": side}
    dialog.show_outcome(FinetuneOutcome("done", "Wrote v1", 0, result))
    text = dialog.summary.text()
    assert "trained on 1 verified image for 200 steps" in text and "measured on 1 held-out image (img03.png)" in text
    assert "held-out ones" not in text and "decided_accuracy" not in text
    qtbot.wait(50)
    table = dialog.table
    assert table.rowCount() == 2 + len(classes) and not table.verticalScrollBar().isVisible()
    rows = sum(table.rowHeight(r) for r in range(table.rowCount())) + table.horizontalHeader().height()
    assert table.height() >= rows
    assert dialog.height() <= dialog.sizeHint().height() + 40  # no empty band below "Finished"


def test_improve_without_these_classes_reruns_the_trainer_with_the_flag(window, monkeypatch):
    for rel in window.project.images():  # 3 verified: the app lets the trainer decide
        window.file_list.select(rel)
        window.session.open_image(rel)
        window.session.mark_verified(True)
    started = []
    monkeypatch.setattr(window.improve_model.client, "start", lambda command, **kw: started.append(command) or True)
    window.improve_model.start()
    window.improve_model.dialog.retry_requested.emit(["--skip-empty-classes"])
    assert len(started) == 2 and "--skip-empty-classes" not in started[0] and started[1][-1] == "--skip-empty-classes"
