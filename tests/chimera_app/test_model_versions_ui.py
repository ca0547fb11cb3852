"""Model → Versions and Improve model, through the real window (offscreen): the project's versions
with their metrics and date, the one in use checked; switching and rolling back are one click and
are recorded in models/index.json; re-pre-label leaves verified images alone; Improve model runs a
real ``chimera-train finetune`` subprocess, shows the held-out numbers and switches on request."""

import json

import pytest

from chimera_app.project.document import ImageState
from chimera_app.service.versions import compare_rows, list_versions, record_in_use, version_of
from chimera_app.ui.main_window import MainWindow
from chimera_engine.formats.model_versions import add_version, models_dir, read_index, set_active
from chimera_engine.models import load_model, save_model
from tests.chimera_app.test_main_window import messages  # noqa: F401 (fixture)
from tests.trainer.test_finetune import base_checkpoint, make_project  # noqa: F401 (fixture)

WAIT = 60_000
HELD_OUT = {"mIoU_before": 0.40, "mIoU_after": 0.55, "pixels_to_change_before": 1542.0,
            "pixels_to_change_after": 1143.0}


@pytest.fixture
def project(base_checkpoint, tmp_path):  # noqa: F811
    """5 shapes images, 4 verified, model = a tiny Chimera-Seg; versions v1 and v2 written as real
    checkpoints through the shared index module, v2 active."""
    root = tmp_path / "proj"
    make_project(root, 5, 4, model=base_checkpoint)
    model = load_model(base_checkpoint)

    def write(name, checkpoint, metrics):
        save_model(model, checkpoint, info={"finetune": {"version": name}})
        metrics.write_text("{}")
        return {"base": base_checkpoint, "alpha": 0.5, "train_images": 3, "held_out_images": 1, "held_out": HELD_OUT}

    models = models_dir(root / ".chimera")
    add_version(models, write)
    add_version(models, write, activate=True)
    return root


def open_window(qtbot, root):
    window = MainWindow(device="cpu")
    qtbot.addWidget(window)
    window.resize(900, 600)
    window.show()
    assert window.open_project(root)
    qtbot.waitUntil(lambda: window.predictions_shown > 0, timeout=WAIT)
    return window


def checkpoint(window, name):
    return str(window.project.data_dir / "models" / f"{name}.safetensors")


def test_the_menu_lists_versions_and_rolls_back_in_one_click(qtbot, project, base_checkpoint, messages):  # noqa: F811
    window = open_window(qtbot, project)
    models = window.project.data_dir / "models"
    assert window.model_in_use == checkpoint(window, "v2")  # the active version is what opens
    assert window.status.model_label.text().startswith("v2 · ")
    window.versions_menu.aboutToShow.emit()
    actions = window.model_versions.actions
    assert list(actions) == [None, "v1", "v2"]
    assert actions["v2"].isChecked() and not actions["v1"].isChecked() and not actions[None].isChecked()
    assert actions[None].text() == "Base model: base.safetensors"
    text = actions["v1"].text()
    assert text.startswith("v1 · from base.safetensors · 20") and "held-out mIoU 40.0 → 55.0 %" in text
    assert "pixels to change 1,542 → 1,143 per image" in text and "α 0.5" in text

    actions[None].trigger()  # roll back to the base model
    qtbot.waitUntil(lambda: window.model_in_use == base_checkpoint, timeout=WAIT)
    assert read_index(models)["active"] is None
    assert window.project.model == base_checkpoint  # a version never replaced the project's own model
    assert json.loads((window.project.data_dir / "project.json").read_text())["model"] == base_checkpoint

    window.versions_menu.aboutToShow.emit()
    assert window.model_versions.actions[None].isChecked()
    window.model_versions.actions["v1"].trigger()
    qtbot.waitUntil(lambda: window.model_in_use == checkpoint(window, "v1"), timeout=WAIT)
    assert read_index(models)["active"] == "v1" and window.project.model == base_checkpoint
    window.close()
    assert read_index(models)["active"] == "v1"  # reopening uses it again


def test_switch_and_re_pre_label_only_touches_images_nobody_verified(qtbot, project, messages):  # noqa: F811
    window = open_window(qtbot, project)
    sent = []
    real = window.client.prelabel
    window.client.prelabel = lambda items, *a, **kw: sent.append([rel for rel, _ in items]) or real(items, *a, **kw)
    finished = []
    window.client.prelabel_finished.connect(finished.append)
    window.model_versions.switch("v1", prelabel=True)
    qtbot.waitUntil(lambda: bool(finished), timeout=WAIT)
    assert window.model_in_use == checkpoint(window, "v1") and read_index(window.project.data_dir / "models")[
        "active"] == "v1"
    assert sent == [["img04.png"]]  # img00..img03 are human-verified
    assert finished[0].done == 1 and not finished[0].failed
    window.session.saver.flush()
    assert window.project.state("img04.png") == ImageState.PREDICTED
    assert window.project.state("img00.png") == ImageState.VERIFIED

    finished.clear()
    window.actions_by_name["reprelabel"].trigger()  # the menu's one action, after any switch
    qtbot.waitUntil(lambda: bool(finished), timeout=WAIT)
    assert sent[-1] == ["img04.png"]
    window.close()


def test_improve_model_runs_the_trainer_shows_the_numbers_and_switches(qtbot, project, messages):  # noqa: F811
    window = open_window(qtbot, project)
    window.improve_model.extra_args = ["--iterations", "2", "--batch-size", "2", "--holdout", "0.34"]
    window.actions_by_name["improve_model"].trigger()
    dialog = window.improve_model.dialog
    assert dialog.isVisible() and not dialog.isModal() and window.improve_model.running
    command = window.improve_model.client.runner.command
    assert command[1:4] == ["-m", "chimera_trainer.cli", "finetune"]
    assert command[command.index("--base") + 1] == checkpoint(window, "v2")  # starts from the model in use
    window.actions_by_name["next_image"].trigger()  # the window stays usable meanwhile
    dialog.close_button.click()  # "Hide": the status bar keeps the progress, a click brings it back
    assert not dialog.isVisible() and window.status.finetune.isVisible()
    window.status.finetune.click()
    assert dialog.isVisible()
    qtbot.waitUntil(lambda: dialog.version is not None or not window.improve_model.running, timeout=240_000)
    assert dialog.version == "v3", dialog.summary.text()
    assert dialog.table.item(0, 0).text() == "mIoU (%)" and dialog.table.rowCount() == 2 + 4  # + per class
    assert dialog.use_button.isVisible() and not window.status.finetune.isVisible()
    assert read_index(window.project.data_dir / "models")["active"] == "v2"  # nothing switched by itself
    dialog.use_button.click()
    qtbot.waitUntil(lambda: window.model_in_use == checkpoint(window, "v3"), timeout=WAIT)
    assert read_index(window.project.data_dir / "models")["active"] == "v3"
    window.close()


def test_a_refusal_or_a_crash_is_said_in_the_dialog_without_a_traceback(qtbot):
    """The outcomes of the runner's real-subprocess tests (test_finetune_runner.py), as the dialog shows them."""
    from chimera_app.service.finetune_runner import classify_exit
    from chimera_app.ui.improve_model import ImproveModelDialog

    dialog = ImproveModelDialog()
    qtbot.addWidget(dialog)
    dialog.show()
    assert not dialog.isModal() and dialog.cancel_button.isVisible() and dialog.close_button.text() == "Hide"
    refused = classify_exit(1, "", ["WARNING:root:Model configuration not found",
                                    "chimera-train: too few human-verified images to fine-tune: 1 of the needed 3"],
                            cancel_requested=False)
    dialog.show_outcome(refused)
    assert dialog.stage.text() == "Cannot improve the model"
    assert dialog.summary.text().startswith("too few human-verified images")
    assert not dialog.use_button.isVisible() and not dialog.cancel_button.isVisible() and dialog.version is None
    dialog.start_run()
    crash = classify_exit(1, "", ["Traceback (most recent call last):", "RuntimeError: boom"], False)
    dialog.show_outcome(crash)
    assert dialog.stage.text() == "The fine-tune stopped" and "Traceback" not in dialog.summary.text()
    assert "Nothing was changed" in dialog.summary.text() and "RuntimeError: boom" in dialog.summary.toolTip()


def test_the_index_follows_the_model_in_use(project, base_checkpoint):  # noqa: F811
    data = project / ".chimera"
    v1 = str(data / "models" / "v1.safetensors")
    assert version_of(data, v1) == "v1" and version_of(data, base_checkpoint) is None
    assert version_of(data, "shapes-chimera") is None
    index_file = data / "models" / "index.json"
    assert record_in_use(data, v1) == "v1" and read_index(data / "models")["active"] == "v1"
    stamp = index_file.stat().st_mtime_ns
    record_in_use(data, v1)
    assert index_file.stat().st_mtime_ns == stamp  # written only when it changes
    assert record_in_use(data, base_checkpoint) is None and read_index(data / "models")["active"] is None
    set_active(data / "models", "v2")
    versions, active = list_versions(data)
    assert [v.name for v in versions] == ["v1", "v2"] and active == "v2"
    rows = compare_rows({"classes": ["circle"], "before": {"mIoU": 0.4, "pixels_to_change_per_image": 10.0,
                                                           "per_class_iou": {"circle": None}},
                         "after": {"mIoU": 0.5, "pixels_to_change_per_image": 5.0, "per_class_iou": {"circle": 0.5}}})
    assert rows == [("mIoU (%)", "40.0", "50.0"), ("pixels to change per image", "10", "5"),
                    ("IoU circle (%)", "–", "50.0")]
