"""The GUI-reachable hostile cases through the window (offscreen): a message, the window alive,
the saved labels unchanged."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6.QtWidgets import QFileDialog, QMessageBox  # noqa: E402

from chimera_app.project import Project  # noqa: E402
from tests.hostile.conftest import labelled, write_png  # noqa: E402

TINY = "clip:chimera-tiny/random"


@pytest.fixture
def messages(monkeypatch):
    """Modal boxes would block an offscreen test: record them instead."""
    shown = []
    for kind in ("warning", "critical", "information"):
        monkeypatch.setattr(QMessageBox, kind, lambda parent, title, text, *a, _k=kind, **kw: shown.append((_k, text)))
    return shown


@pytest.fixture
def window(qtbot, messages):
    from chimera_app.ui.main_window import MainWindow

    window = MainWindow(device="cpu")
    qtbot.addWidget(window)
    window.show()
    yield window
    window.close()


HOSTILE_IMPORTS = {
    "same_image_twice": ({"images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 10},
                                     {"id": 2, "file_name": "./a.png", "width": 20, "height": 10}],
                          "annotations": [], "categories": [{"id": 1, "name": "thing"}]}, "listed twice"),
    "polygon_bomb": ({"images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 10}],
                      "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                                       "segmentation": [[0, 0, 1e12, 0, 1e12, 1e12]]}],
                      "categories": [{"id": 1, "name": "thing"}]}, "far outside"),
    "integer_category_name": ({"images": [], "annotations": [], "categories": [{"id": 1, "name": 7}]}, "name 7"),
    "declared_200000_square": ({"images": [{"id": 1, "file_name": "a.png", "width": 200000, "height": 200000}],
                                "annotations": [], "categories": [{"id": 1, "name": "thing"}]}, "too large"),
}


def test_hostile_coco_imports_through_the_window(window, messages, image_folder, tmp_path, monkeypatch):
    with Project.open(image_folder) as project:
        saved = labelled(project, "a.png")
    assert window.open_project(image_folder, model=TINY)
    for case, (content, words) in sorted(HOSTILE_IMPORTS.items()):
        path = tmp_path / f"{case}.json"
        path.write_text(json.dumps(content))
        monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, _p=path, **k: (str(_p), ""))
        messages.clear()
        window.import_coco()
        assert any(kind == "warning" and words in text for kind, text in messages), (case, messages)
        assert window.isVisible() and window.project is not None
        assert np.array_equal(window.project.load_document("a.png").labels, saved), case


def test_a_locked_project_is_refused_with_a_message(window, messages, image_folder):
    with Project.open(image_folder):
        assert not window.open_project(image_folder, model=TINY)
    assert messages and messages[0][0] == "critical" and "already open" in messages[0][1]
    assert window.isVisible()


def test_a_folder_with_link_loops_opens_and_names_what_it_skipped(window, messages, tmp_path):
    root = tmp_path / "images"
    write_png(root / "a.png", 10, 20)
    try:
        os.symlink("self.png", root / "self.png")
        os.symlink(root / "gone.png", root / "b.png")
    except (OSError, NotImplementedError):
        pytest.skip("cannot create symbolic links here")
    assert window.open_project(root, model=TINY)
    assert window.project.images() == ["a.png"]
    assert "Skipped 2" in window.statusBar().currentMessage()
