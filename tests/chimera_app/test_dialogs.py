"""ShortcutSheet against PRODUCT.md, ExportDialog with fake exporters, ModelDialog with a fake
EngineClient (download progress, finish, failure, cancel)."""

from pathlib import Path
from types import SimpleNamespace

import pytest
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QDialogButtonBox

from chimera_app.project.document import ImageState
from chimera_app.ui import shortcuts
from chimera_app.ui.dialogs import ExportDialog, ModelDialog, ShortcutSheet
from chimera_app.ui.export_dialog import COCO, PNG_MASKS
from chimera_engine.errors import ChimeraError, WeightsNotFoundError

LABELLED = {ImageState.PREDICTED, ImageState.IN_PROGRESS, ImageState.VERIFIED}

# PRODUCT.md, "Shortcuts people already have in their fingers": key -> the action it must trigger.
PRODUCT_SHORTCUTS = {
    "D": "next_image", "A": "previous_image", "Ctrl+U": "open_folder", "Ctrl+S": "save",
    "Ctrl+Z": "undo", "Ctrl+Shift+Z": "redo", "Ctrl+Y": "redo", "B": "brush", "E": "eraser",
    "G": "fill", "P": "polygon", "R": "rectangle", **{str(n): f"class_{n}" for n in range(1, 10)},
    "[": "brush_smaller", "]": "brush_larger", "T": "toggle_masks", "Ctrl++": "zoom_in",
    "Ctrl+-": "zoom_out", "Ctrl+0": "fit", "Ctrl+1": "actual_size", "Esc": "cancel", "N": "next_uncertain",
}


# -- shortcuts ----------------------------------------------------------------------------------
def test_every_product_shortcut_is_bound_and_listed(qtbot):
    sheet = ShortcutSheet()
    qtbot.addWidget(sheet)
    listed = {}
    for keys, description in sheet.rows():
        for key in keys.split(" or "):
            listed[key] = description
    for key, action in PRODUCT_SHORTCUTS.items():
        row = shortcuts.by_action(action)
        assert key in shortcuts.keys_for(action), (key, action)
        assert listed.get(key, "").startswith(row.description), key


def test_shortcut_keys_are_valid_and_never_bound_twice():
    seen = {}
    for row in shortcuts.SHORTCUTS:
        if row.scope == shortcuts.MOUSE:
            continue
        for key in row.keys:
            seq = QKeySequence(key)
            assert seq.count() == 1 and seq.toString() == key, key  # a typo would not round-trip
            assert seq not in seen, f"{key} is bound to {seen[seq]} and {row.action}"
            seen[seq] = row.action
    assert shortcuts.keys_for("export") == ("Ctrl+E",) and shortcuts.keys_for("class_delete") == ()  # panel-local
    assert {s.action for s in shortcuts.window_shortcuts()} >= set(PRODUCT_SHORTCUTS.values())


# -- export -------------------------------------------------------------------------------------
class FakeExporter:
    def __init__(self, error: Exception | None = None):
        self.calls, self.error = [], error

    def coco(self, project, path, states=None):
        self.calls.append(("coco", Path(path), states))
        if self.error:
            raise self.error
        Path(path).write_text("{}")
        return {"time": "now", "kind": "coco", "path": str(path), "images": 3, "annotations": 7}

    def png(self, project, out_dir, states=None):
        self.calls.append(("png", Path(out_dir), states))
        if self.error:
            raise self.error
        return {"kind": "png", "path": str(out_dir), "images": 2, "annotations": 2}


def make_export(qtbot, tmp_path, exporter, **kwargs):
    root = tmp_path / "photos"
    root.mkdir()
    dialog = ExportDialog(SimpleNamespace(root=root), export_coco=exporter.coco, export_png_masks=exporter.png,
                          **kwargs)
    qtbot.addWidget(dialog)
    return dialog


def test_export_coco_shows_the_summary(qtbot, tmp_path):
    exporter = FakeExporter()
    dialog = make_export(qtbot, tmp_path, exporter)
    assert dialog.target() == tmp_path / "photos_coco.json"  # beside the image folder, not in it
    with qtbot.waitSignal(dialog.exported) as blocker:
        qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    assert exporter.calls == [("coco", tmp_path / "photos_coco.json", LABELLED)]
    assert blocker.args[0]["annotations"] == 7 and (tmp_path / "photos_coco.json").exists()
    assert dialog.result_text() == f"Exported 3 images, 7 annotations to {tmp_path / 'photos_coco.json'}"
    dialog.verified_radio.setChecked(True)
    dialog.run_export()
    assert exporter.calls[-1][2] == {ImageState.VERIFIED}


def test_export_failure_shows_the_validation_errors_and_writes_nothing(qtbot, tmp_path):
    error = ChimeraError("the COCO export failed validation, nothing was written: annotation 4: "
                         "masks of categories 1 and 2 overlap")
    exporter = FakeExporter(error)
    dialog = make_export(qtbot, tmp_path, exporter)
    emitted = []
    dialog.exported.connect(emitted.append)
    assert dialog.run_export() is None
    assert "Nothing was exported" in dialog.result_text() and "overlap" in dialog.result_text()
    assert "c62828" in dialog.result_label.styleSheet()  # shown as an error
    assert emitted == [] and dialog.summary is None and not (tmp_path / "photos_coco.json").exists()


def test_png_masks_target_a_folder_outside_the_images(qtbot, tmp_path):
    exporter = FakeExporter()
    chosen = []
    dialog = make_export(qtbot, tmp_path, exporter,
                         choose_dir=lambda parent, title, start: chosen.append(start) or str(tmp_path / "photos" / "m"))
    dialog.set_kind(PNG_MASKS)
    assert dialog.target() == tmp_path / "photos_masks"
    dialog.browse()
    assert dialog.target() == tmp_path / "photos" / "m"
    assert dialog.run_export() is None and exporter.calls == []  # inside the image folder: refused
    assert "inside the image folder" in dialog.result_text()
    dialog.set_target(tmp_path / "masks")
    assert dialog.run_export()["kind"] == PNG_MASKS
    assert exporter.calls == [("png", tmp_path / "masks", LABELLED)] and "2 images" in dialog.result_text()
    dialog.set_kind(COCO)
    assert dialog.target() == tmp_path / "photos_coco.json"  # each format keeps its own target


# -- model --------------------------------------------------------------------------------------
class FakeClient(QObject):
    download_progress = Signal(object, object)  # byte counts pass 2**31
    download_finished = Signal(str)
    failed = Signal(str, str)

    def __init__(self):
        super().__init__()
        self.downloads, self.cancels = [], 0

    def download(self, spec):
        self.downloads.append(spec)

    def cancel_download(self):
        self.cancels += 1


@pytest.fixture
def model_dialog(qtbot, tmp_path):
    def make(current="clip:ViT-B-16/openai", cached=None, **kwargs):
        client = FakeClient()
        kwargs.setdefault("offline_reason", lambda: None)  # online, unless a test says otherwise
        dialog = ModelDialog(client, current=current, cache_dir=lambda: tmp_path / "hf-cache",
                             cached_file=kwargs.pop("cached_file", lambda spec: cached), **kwargs)
        qtbot.addWidget(dialog)
        dialog.show()
        return dialog, client

    return make


def ok_enabled(dialog) -> bool:
    return dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).isEnabled()


def test_download_progress_and_finish(model_dialog, qtbot, tmp_path):
    dialog, client = model_dialog()
    assert str(tmp_path / "hf-cache") in dialog.cache_label.text()
    assert "not downloaded" in dialog.status_label.text() and dialog.download_button.isEnabled()
    qtbot.mouseClick(dialog.download_button, Qt.MouseButton.LeftButton)
    assert client.downloads == ["clip:ViT-B-16/openai"]
    assert dialog.progress.isVisible() and dialog.cancel_button.isVisible() and not ok_enabled(dialog)
    client.download_progress.emit(3 * 2**30, 6 * 2**30)  # a 6 GB file: beyond 32-bit ints
    assert dialog.progress.value() == dialog.progress.maximum() // 2
    assert dialog.progress.format() == "3072.0 / 6144.0 MB"
    client.download_finished.emit("/cache/model.safetensors")
    assert not dialog.is_downloading() and not dialog.progress.isVisible() and ok_enabled(dialog)
    assert "downloaded to /cache/model.safetensors" in dialog.status_label.text()


def test_cancel_stops_the_download_and_ignores_late_progress(model_dialog, qtbot):
    dialog, client = model_dialog()
    dialog.start_download()
    client.download_progress.emit(10, 100)
    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    assert client.cancels == 1 and not dialog.is_downloading() and "cancelled" in dialog.status_label.text()
    client.download_progress.emit(50, 100)
    assert dialog.progress.value() == 0 and not dialog.progress.isVisible()
    dialog.start_download()
    dialog.reject()  # closing the dialog cancels too
    assert client.cancels == 2


def test_download_failure_is_shown(model_dialog):
    dialog, client = model_dialog()
    dialog.start_download()
    client.failed.emit("image", "cannot decode x.png")  # another kind: not about the download
    assert dialog.is_downloading()
    client.failed.emit("model", "no network")
    assert not dialog.is_downloading() and "no network" in dialog.status_label.text()
    assert dialog.download_button.isEnabled()


def test_cached_unknown_local_and_checkpoint_choices(model_dialog, tmp_path):
    dialog, _ = model_dialog(cached=Path("/hf/w.safetensors"))
    assert "cached: /hf/w.safetensors" in dialog.status_label.text() and not dialog.download_button.isEnabled()
    assert dialog.model_name() == "clip:ViT-B-16/openai" and ok_enabled(dialog)

    def unknown(spec):
        raise WeightsNotFoundError(f"{spec} is not a pretrained tag")

    weights = tmp_path / "w.bin"
    weights.write_bytes(b"0")
    dialog, _ = model_dialog(cached_file=unknown, open_file=lambda parent, title, filt: str(weights))
    dialog.clip_edit.setText("ViT-B-16/nonsense")
    assert "not a pretrained tag" in dialog.status_label.text() and not ok_enabled(dialog)
    dialog.use_local_file()
    assert dialog.model_name() == f"clip:ViT-B-16/{weights}" and "local file" in dialog.status_label.text()

    dialog.set_model_name(str(tmp_path / "missing.safetensors"))
    assert dialog.choice() == "checkpoint" and not ok_enabled(dialog)
    dialog.set_model_name("shapes-clip")
    assert dialog.model_name() == "shapes-clip" and ok_enabled(dialog)
    dialog.device_combo.setCurrentText("cpu")
    dialog.precision_combo.setCurrentText("fp32")
    assert (dialog.device(), dialog.precision()) == ("cpu", "fp32")


def test_default_cache_probes_need_no_network(qtbot):
    from chimera_engine.clip_loading import hf_cache_dir

    dialog = ModelDialog(None, current="clip:ViT-B-16/openai")  # real probes, HF_HUB_OFFLINE=1
    qtbot.addWidget(dialog)
    assert str(hf_cache_dir()) in dialog.cache_label.text()
    assert dialog.status_label.text().startswith(("cached", "clip:ViT-B-16/openai is not in the cache"))
    assert not dialog.download_button.isVisibleTo(dialog)  # no client: no downloading


def test_the_png_target_follows_a_chosen_coco_folder_and_may_not_exist_yet(qtbot, tmp_path):
    exporter = FakeExporter()
    new_folder = tmp_path / "exports" / "masks-v1"  # neither folder exists yet
    dialog = make_export(qtbot, tmp_path, exporter, choose_dir=lambda parent, title, start: str(new_folder))
    (tmp_path / "exports").mkdir()
    dialog.set_target(tmp_path / "exports" / "train.json")
    dialog.set_kind(PNG_MASKS)
    assert dialog.target() == tmp_path / "exports" / "photos_masks"  # same folder, not back beside the images
    dialog.browse()
    assert dialog.target() == new_folder and dialog.run_export() is not None
    assert exporter.calls[-1][:2] == ("png", new_folder)
    dialog.set_kind(COCO)
    assert dialog.target() == tmp_path / "exports" / "train.json"  # a typed target is kept


def test_the_folder_chooser_accepts_a_name_that_does_not_exist(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    from chimera_app.ui import export_dialog

    seen = {}

    def fake_exec(self):
        seen["mode"], seen["accept"] = self.fileMode(), self.acceptMode()
        self.selectFile(str(tmp_path / "not-yet"))
        return 1

    monkeypatch.setattr(QFileDialog, "exec", fake_exec)
    assert export_dialog._choose_dir(None, "Folder", str(tmp_path)) == str(tmp_path / "not-yet")
    assert seen == {"mode": QFileDialog.FileMode.AnyFile, "accept": QFileDialog.AcceptMode.AcceptSave}
