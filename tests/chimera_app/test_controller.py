"""AnnotationController against a scripted engine client: what it asks for while the user types,
and what it does with each typed result (a preview is shown, never stored, whatever its shape)."""

import numpy as np
import pytest
from PySide6.QtCore import QObject, Signal

from chimera_app.project import ImageState, Project
from chimera_app.service.requests import PrelabelResult, PrelabelSummary, Segmented
from chimera_app.session import Session
from chimera_app.ui.canvas import Canvas
from chimera_app.ui.class_panel import ClassPanel
from chimera_app.ui.controller import AnnotationController
from chimera_app.ui.file_list import FileList

from .service_harness import write_image

H, W = 48, 64


class ScriptedClient(QObject):
    """EngineClient's signals and requests; the test answers by emitting the signals itself."""

    image_ready = Signal(str, object)
    image_failed = Signal(str, str)
    segmented = Signal(object)
    prelabel_progress = Signal(int, int)
    prelabel_result = Signal(object)
    prelabel_failed = Signal(str, str)
    prelabel_finished = Signal(object)

    def __init__(self):
        super().__init__()
        self.requests: list[dict] = []
        self.prelabels: list[tuple] = []
        self._generation = 0

    def show_image(self, key, path):
        self.shown = key

    def prefetch(self, keys_paths):
        pass

    def segment(self, key, prompts, class_ids=None, preview=False, display_size=None):
        self._generation += 1
        self.requests.append(dict(key=key, prompts=list(prompts), class_ids=list(class_ids), preview=preview,
                                  display_size=display_size, generation=self._generation))
        return self._generation

    def prelabel(self, items, prompts, class_ids=None):
        self.prelabels.append((list(items), list(prompts), list(class_ids)))
        return True

    def cancel_prelabel(self):
        pass

    def answer(self, request, labels, preview=None):
        confidence = np.full(labels.shape, 0.8, np.float32)
        self.segmented.emit(Segmented(request["key"], request["generation"], labels, confidence,
                                      request["preview"] if preview is None else preview))


@pytest.fixture
def setup(qtbot, tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    for i in range(2):
        write_image(root / f"img{i}.png", i)
    project = Project.open(root)
    project.classes.add("road")
    session, client = Session(project), ScriptedClient()
    canvas, panel, files = Canvas(), ClassPanel(project.classes), FileList()
    for widget in (canvas, panel, files):
        qtbot.addWidget(widget)
    files.set_project(project.images(), project.state, project.uncertainty)
    controller = AnnotationController(session, client, canvas, panel, files)
    controller.show_image("img0.png")
    client.image_ready.emit("img0.png", np.zeros((H, W, 3), np.uint8))
    yield controller, client, panel, session, project
    controller.detach()
    session.close()
    project.close()


def test_the_first_request_is_full_size_and_its_result_is_stored(setup):
    controller, client, _, session, project = setup
    (first,) = client.requests
    assert first["prompts"] == ["road"] and first["class_ids"] == project.classes.ids() and not first["preview"]
    client.answer(first, np.full((H, W), project.classes.ids()[0], np.uint16))
    assert session.doc.state == ImageState.PREDICTED and (session.doc.labels == 1).all()


def test_a_draft_is_previewed_and_a_preview_is_never_stored_even_at_full_size(setup, qtbot):
    controller, client, panel, session, project = setup
    client.requests.clear()
    panel.entry.setText("car")
    preview = client.requests[-1]
    assert preview["preview"] and preview["prompts"] == ["road", "car"]
    assert preview["class_ids"] == [1, project.classes.next_id]
    client.answer(preview, np.full((H, W), project.classes.next_id, np.uint16))  # the image's own size
    assert (controller.canvas.labels == project.classes.next_id).all()
    assert session.doc.state == ImageState.UNLABELED and not session.doc.labels.any()
    qtbot.waitUntil(lambda: not client.requests[-1]["preview"], timeout=2000)  # typing paused
    settled = client.requests[-1]
    assert settled["prompts"] == ["road", "car"]
    client.answer(settled, np.full((H, W), project.classes.next_id, np.uint16))
    assert not session.doc.labels.any()  # still a draft: shown, not stored


def test_an_invalid_draft_asks_for_nothing_new(setup, qtbot):
    controller, client, panel, _, _ = setup
    client.requests.clear()
    for text in ("Road", "cat; cat", "road  "):
        panel.entry.setText(text)
        assert panel.error_text()
    qtbot.wait(400)
    assert all(r["prompts"] == ["road"] for r in client.requests)


def test_only_the_newest_answer_for_the_image_on_screen_counts(setup):
    controller, client, panel, session, project = setup
    old = client.requests[-1]
    controller.request_prediction()
    client.answer(old, np.full((H, W), 1, np.uint16))  # superseded by the second request
    assert session.doc.state == ImageState.UNLABELED
    controller.show_image("img1.png")
    client.answer(client.requests[-1], np.full((H, W), 1, np.uint16))  # for an image the user left
    assert session.rel == "img1.png" and session.doc.state == ImageState.UNLABELED


def test_folder_pre_label_sends_class_ids_and_stores_results(setup, qtbot):
    controller, client, panel, session, project = setup
    running = []
    controller.prelabel_running.connect(running.append)
    controller.prelabel()
    (items, prompts, ids) = client.prelabels[0]
    assert [rel for rel, _ in items] == ["img0.png", "img1.png"] and prompts == ["road"] and ids == [1]
    labels = np.full((H, W), 1, np.uint16)
    for rel in ("img0.png", "img1.png"):
        client.prelabel_result.emit(PrelabelResult(rel, labels, np.full((H, W), 0.9, np.float32)))
    client.prelabel_finished.emit(PrelabelSummary(2, 2, (), False, ()))
    session.saver.flush()
    assert running == [True, False]
    assert project.state("img1.png") == ImageState.PREDICTED and (project.load_document("img1.png").labels == 1).all()
    assert (session.doc.labels == 1).all()


def test_an_edit_the_disk_refuses_is_reported_and_not_shown(setup, monkeypatch):
    from chimera_app.project.store import EditNotSavedError

    controller, client, panel, session, project = setup
    failures = []
    controller.failed.connect(lambda kind, text: failures.append((kind, text)))

    def full_disk(*args, **kwargs):
        raise EditNotSavedError("the edit to 'img0.png' could not be saved (no space left on device)")

    monkeypatch.setattr(project, "record", full_disk)
    controller.canvas.rectangle_finished.emit(1.0, 1.0, 8.0, 8.0)
    assert failures and failures[0][0] == "disk" and "no space" in failures[0][1]
    assert not session.doc.labels.any() and not controller.canvas.labels.any()
    assert not session.undo_stack.can_undo


def test_a_project_file_the_disk_refuses_is_reported_and_the_class_kept(setup, monkeypatch):
    from chimera_app.project.store import SaveError

    controller, client, panel, session, project = setup
    failures = []
    controller.failed.connect(lambda kind, text: failures.append((kind, text)))

    def full_disk():
        raise SaveError("the project file could not be saved (no space left on device)")

    monkeypatch.setattr(project, "save_meta", full_disk)
    assert panel.add_class("car") is not None
    assert failures == [("disk", "the project file could not be saved (no space left on device)")]
    assert [c.name for c in project.classes] == ["road", "car"]
    assert client.requests[-1]["prompts"] == ["road", "car"]  # and it is predicted all the same
