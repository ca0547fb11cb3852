"""Issue 15, "the first ten minutes": the behaviours a new user meets first, through the real window
(offscreen): welcome page, recent projects, model dialog offline, failures that never interrupt,
provenance view, cursor readout, keys, report, guide."""

import time

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QDialogButtonBox

from chimera_app.project.classes import DISTINCT_COLORS, ClassList
from chimera_app.project.document import ImageState, Provenance
from chimera_app.project.store import Project
from chimera_app.ui.main_window import MainWindow
from tests.chimera_app.test_main_window import TINY, WAIT, messages, open_window, window, write_images  # noqa: F401


def keys(window, name):
    return [s.toString() for s in window.actions_by_name[name].shortcuts()]


# -- start-up -----------------------------------------------------------------------------------
def test_an_empty_window_shows_the_welcome_page_with_recent_projects(qtbot, tmp_path, messages):
    folder = write_images(tmp_path / "images", n=1)
    first = MainWindow(device="cpu")
    qtbot.addWidget(first)
    assert first.pages.currentWidget() is first.welcome and first.welcome.recent() == []
    assert first.open_project(folder, model=TINY)
    assert first.pages.currentWidget() is first.canvas
    first.close()
    second = MainWindow(device="cpu")
    qtbot.addWidget(second)
    assert second.welcome.recent() == [str(folder.resolve())]
    second.fill_recent_menu()
    assert [a.text() for a in second.recent_menu.actions()] == [str(folder.resolve())]
    second.welcome.recent_list.itemActivated.emit(second.welcome.recent_list.item(0))
    assert second.project is not None and second.project.root.resolve() == folder.resolve()
    second.close()


def test_a_class_typed_before_a_folder_is_opened_is_kept(qtbot, tmp_path, messages):
    window = MainWindow(device="cpu")
    qtbot.addWidget(window)
    window.class_panel.entry.setText("kite")
    qtbot.keyClick(window.class_panel.entry, Qt.Key.Key_Return)
    assert window.open_project(write_images(tmp_path / "images", n=1), model=TINY, classes=["circle", "kite"])
    assert [c.name for c in window.project.classes] == ["kite", "circle"]  # once, no clash message
    assert "not added" not in window.statusBar().currentMessage()
    window.close()


def test_rerunning_the_demo_after_a_reorder_adds_nothing(tmp_path):
    from chimera_app.app import create_demo_folder, demo_classes

    folder = create_demo_folder(tmp_path / "demo")
    names = demo_classes(folder)
    assert names
    with Project.open(folder) as project:
        for name in names:
            project.classes.add(name)
        project.classes.move(project.classes.ids()[-1], 0)
        project.save_meta()
    assert demo_classes(folder) == []  # the project has its own (reordered) classes now


def test_a_photo_folder_without_a_model_is_never_given_the_shapes_toy_model(qtbot, tmp_path, messages):
    window = MainWindow(device="cpu")
    qtbot.addWidget(window)
    assert window.open_project(write_images(tmp_path / "photos", n=1))
    assert window.model_name is None  # nothing loaded: the photo default is not cached offline
    assert "clip:ViT-B-16/openai" in window.statusBar().currentMessage()
    assert "Choose model" in window.statusBar().currentMessage()
    window.close()


# -- model --------------------------------------------------------------------------------------
def test_offline_model_choice_says_so_at_once_with_both_ways_out(qtbot, monkeypatch):
    import chimera_engine.clip_loading  # noqa: F401 -- imported already when a model runs; not part of the wait

    from chimera_app.ui.dialogs import ModelDialog

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    dialog = ModelDialog(None, current="clip:ViT-B-16/openai")
    qtbot.addWidget(dialog)
    elapsed = time.perf_counter() - started
    text = dialog.status_label.text()
    if text.startswith("cached"):
        pytest.skip("the ViT-B-16 weights are cached on this machine")
    assert elapsed < 2.0, elapsed
    assert "cannot be downloaded: HF_HUB_OFFLINE=1 is set" in text
    assert "copy a Hugging Face cache" in text and "Use a local file" in text
    assert not dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).isEnabled()
    assert dialog.buttons.button(QDialogButtonBox.StandardButton.Cancel).isEnabled()
    assert dialog.status_label.wordWrap() and dialog.minimumWidth() >= 600


def test_the_method_combo_composes_the_model_name(qtbot, tmp_path):
    from chimera_app.ui.dialogs import ModelDialog

    dialog = ModelDialog(None, current="clip:ViT-B-16/openai+sclip", cached_file=lambda m: tmp_path / "w",
                         offline_reason=lambda: None)
    qtbot.addWidget(dialog)
    assert dialog.method() == "sclip" and dialog.clip_edit.text() == "ViT-B-16/openai"
    assert dialog.model_name() == "clip:ViT-B-16/openai+sclip"
    dialog.set_method("clearclip")
    assert dialog.model_name() == "clip:ViT-B-16/openai+clearclip"
    dialog.set_method("naclip")  # the default: no suffix
    assert dialog.model_name() == "clip:ViT-B-16/openai"
    assert [dialog.method_combo.itemData(i) for i in range(dialog.method_combo.count())][0] == "naclip"


def test_a_checkpoint_is_called_found_only_when_its_header_reads(qtbot, tmp_path, tiny_checkpoint):
    from chimera_app.ui.dialogs import ModelDialog

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a checkpoint at all" * 10)
    dialog = ModelDialog(None, current=str(garbage))
    qtbot.addWidget(dialog)
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert "not a Chimera checkpoint" in dialog.status_label.text() and not ok.isEnabled()
    dialog.set_model_name(tiny_checkpoint)
    assert dialog.status_label.text().startswith("Chimera checkpoint") and ok.isEnabled()


def test_after_a_failed_load_the_status_bar_names_the_model_still_in_use(window, qtbot, messages, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert window.model_in_use == TINY
    window.load_model("clip:ViT-B-16/openai")
    qtbot.waitUntil(lambda: "failed" in window.status.model_label.text(), timeout=WAIT)
    assert window.status.model_label.text().startswith(TINY)
    assert len(messages) == 1  # one message, not one per layer


# -- what the canvas shows ----------------------------------------------------------------------
def test_the_provenance_view_hatches_model_pixels_only(window):
    layer = window.canvas._layers.provenance
    window.actions_by_name["toggle_provenance"].trigger()
    assert window.canvas.show_provenance
    doc = window.session.doc
    pixels = layer.pixels()
    model = doc.provenance == Provenance.MODEL
    assert (pixels[model] != 0).all() and (pixels[~model] == 0).all()
    window.class_panel.select_key(1)
    window.canvas.rectangle_finished.emit(0.0, 0.0, 10.0, 10.0)  # a person's pixels: no longer hatched
    assert (layer.pixels()[0:10, 0:10] == 0).all()


def test_accepting_a_class_says_what_it_did(window):
    window.class_panel.select_key(1)
    name = window.project.classes.at_key(1).name
    window.actions_by_name["accept_class"].trigger()
    assert f"of '{name}'" in window.statusBar().currentMessage()
    assert window.session.doc.state == ImageState.IN_PROGRESS
    window.actions_by_name["accept_image"].trigger()
    assert "is verified" in window.statusBar().currentMessage()
    assert window.file_list.state(window.session.rel) == ImageState.VERIFIED


def test_the_draft_class_shows_its_colour_swatch(window, qtbot):
    qtbot.keyClicks(window.class_panel.entry, "kite")
    qtbot.waitUntil(lambda: "kite" in window.status.draft_swatch.text(), timeout=WAIT)
    assert window.status.draft_swatch.isVisibleTo(window)
    r, g, b = DISTINCT_COLORS[window.project.classes.next_id - 1]
    assert f"rgb({r},{g},{b})" in window.status.draft_swatch.text() and "kite" in window.status.draft_swatch.text()


def test_pre_label_progress_is_a_bar_with_the_time_left(window):
    window.controller._on_prelabel_progress(0, 10)
    window.controller._prelabel_started = (time.perf_counter() - 4.0, 0)
    window.controller._on_prelabel_progress(2, 10)
    bar = window.status.progress
    assert bar.isVisibleTo(window) and bar.value() == 2 and bar.maximum() == 10
    assert "s left" in bar.format()


def test_default_colours_are_well_separated_and_never_grey():
    colors = np.array(DISTINCT_COLORS, float)
    for i in range(len(colors)):
        assert np.ptp(colors[i]) >= 50  # coloured: nothing grey, which reads as unlabeled
        for j in range(i):
            assert np.abs(colors[i] - colors[j]).sum() >= 120, (i, j)
    classes = ClassList()
    assert [classes.add(n).color for n in ("a", "b", "c")] == list(DISTINCT_COLORS[:3])


# -- keys ---------------------------------------------------------------------------------------
def test_the_keys_people_try_first(window, qtbot, monkeypatch):
    native = lambda k: QKeySequence(k).toString()  # noqa: E731
    assert native("Ctrl+Q") in keys(window, "quit")
    assert {native("Ctrl+O"), native("Ctrl+U")} <= set(keys(window, "open_folder"))
    assert native("Ctrl+E") in keys(window, "export") and "V" in keys(window, "toggle_verified")
    from chimera_app.ui.dialogs import ShortcutSheet

    monkeypatch.setattr(ShortcutSheet, "exec", lambda self: 0)
    window.class_panel.entry.setFocus()
    window.show_shortcuts()
    assert window.focusWidget() is window.canvas  # digits go to the window again, not the class field
    window.actions_by_name["quit"].trigger()
    assert not window.isVisible()


def test_at_1024_px_the_toolbar_keeps_unlabeled_below_and_pre_label(window, qtbot):
    window.resize(1024, 700)
    qtbot.wait(50)
    bar = window.toolbar
    assert bar.widgetForAction(window.actions_by_name["prelabel"]).isVisible()
    assert window.min_confidence.isVisible() and window.min_confidence_label.isVisible()
    tip = window.actions_by_name["toggle_verified"].toolTip()
    assert tip != window.actions_by_name["toggle_verified"].text() and "V" in tip


# -- file list, report, guide -------------------------------------------------------------------
def test_the_file_list_search_narrows_what_d_and_a_walk(window):
    files = window.file_list
    files.set_search("img2")
    assert files.visible_images() == ["img2.png"]
    files.set_search("")
    assert len(files.visible_images()) == 3


def test_the_report_counts_pixels_states_and_confidence(window, qtbot, tmp_path):
    from chimera_app.report import build_report
    from chimera_app.ui.report_window import ReportWindow

    window.class_panel.select_key(1)
    window.canvas.rectangle_finished.emit(0.0, 0.0, 10.0, 10.0)
    window.save()
    report = build_report(window.project)
    assert report.images == 3 and report.states[ImageState.IN_PROGRESS] == 1
    assert sorted(report.never_touched) == ["img1.png", "img2.png"]
    circle = report.classes[0]
    assert circle.human_pixels == 100 and circle.images == 1 and circle.pixels >= 100
    assert report.labelled_pixels == 48 * 64
    markdown = report.to_markdown()
    assert "| circle |" in markdown and "1 in progress" in markdown and "- img1.png" in markdown
    window.actions_by_name["report"].trigger()
    shown = window.report_window
    assert isinstance(shown, ReportWindow) and shown.isVisible() and shown.table.rowCount() == 2
    shown._save_path = lambda parent, start: str(tmp_path / "r.md")
    assert shown.save_markdown().read_text() == shown.markdown()


def test_the_first_run_guide_shows_once_until_dismissed(qtbot, tmp_path, messages, app_config_dir):
    (app_config_dir / "guide-dismissed").unlink()
    window = open_window(qtbot, write_images(tmp_path / "images", n=1))
    guide = window._guide
    assert guide is not None and guide.isVisible() and "Verified" in guide.findChild(type(window.status.zoom_label)).text()
    qtbot.mouseClick(guide.ok_button, Qt.MouseButton.LeftButton)
    assert (app_config_dir / "guide-dismissed").exists() and not guide.isVisible()
    window.close()


def test_space_drag_works_without_clicking_the_canvas_first(window, qtbot):
    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QEnterEvent
    from PySide6.QtWidgets import QApplication

    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=WAIT)
    window.file_list.list.setFocus()
    point = QPointF(50, 50)
    QApplication.sendEvent(window.canvas, QEnterEvent(point, point, point))
    assert window.canvas.hasFocus()  # the pointer over the image is enough: Space now pans
    window.class_panel.entry.setFocus()
    QApplication.sendEvent(window.canvas, QEnterEvent(point, point, point))
    assert window.class_panel.entry.hasFocus()  # never taken from a class being typed


def test_a_model_that_downloads_can_be_cancelled_from_the_status_bar(window, monkeypatch):
    asked, cancels = [], []
    monkeypatch.setattr(window.client, "load_model", lambda *a: asked.append(a))
    window.status.cancel_load.clicked.disconnect()
    window.status.cancel_load.clicked.connect(lambda: cancels.append(1))
    window.load_model("clip:ViT-B-16/openai")
    assert window.status.cancel_load.isVisibleTo(window) and f"still using {TINY}" in window.status.model_label.text()
    window.status.cancel_load.click()
    window.client.download_cancelled.emit()
    assert cancels == [1] and not window.status.cancel_load.isVisibleTo(window)
    assert window.status.model_label.text() == f"{TINY} (loading clip:ViT-B-16/openai cancelled)"
    window.load_model("shapes-clip")  # bundled: nothing to download, nothing to cancel
    assert not window.status.cancel_load.isVisibleTo(window)
