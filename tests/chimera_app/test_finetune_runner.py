"""Improve model's runner, without Qt: a real ``chimera-train finetune`` subprocess on a tiny
verified project reports real progress and a new version; cancel and SIGKILL leave the project and
the active model as they were; a refusal is a message, never a traceback; cancel escalates."""

import json
import os
import signal
import sys
import threading
import time

import pytest

from chimera_app.service.finetune_runner import (
    FinetuneNote,
    FinetuneOutcome,
    FinetuneProgress,
    FinetuneRefusal,
    FinetuneRunner,
    classify_exit,
    finetune_command,
    parse_progress_line,
)
from chimera_engine.formats.model_versions import read_index, set_active
from tests.trainer.test_finetune import _project_files, base_checkpoint, make_project  # noqa: F401 (fixture)

TINY_RUN = ["--device", "cpu", "--batch-size", "2", "--holdout", "0.34"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the test machine's cores are shared
TIMEOUT = 240


class Recorder:
    """Collects a runner's events (emitted on its threads) and waits for one."""

    def __init__(self):
        self.events, self._changed = [], threading.Condition()

    def __call__(self, event):
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def wait_for(self, predicate, timeout=TIMEOUT):
        with self._changed:
            if not self._changed.wait_for(lambda: any(predicate(e) for e in self.events), timeout):
                raise AssertionError(f"no such event within {timeout} s; got {self.events[-5:]}")

    def progress(self, stage=None):
        return [e for e in self.events if isinstance(e, FinetuneProgress) and stage in (None, e.stage)]


def run(command, **options):
    recorder = Recorder()
    runner = FinetuneRunner(command, recorder, env=ONE_THREAD, **options)
    assert runner.start()
    return runner, recorder


@pytest.fixture(scope="module")
def finetuned(base_checkpoint, tmp_path_factory):  # noqa: F811
    """A 4-image verified project fine-tuned once through the runner (2 steps)."""
    root = tmp_path_factory.mktemp("ft") / "proj"
    make_project(root, 4, 4, model=base_checkpoint)
    runner, recorder = run(finetune_command(root, extra=[*TINY_RUN, "--iterations", "2"]))
    outcome = runner.wait(TIMEOUT)
    return root, recorder, outcome


def test_a_real_finetune_reports_progress_and_its_new_version(finetuned):
    root, recorder, outcome = finetuned
    assert outcome is not None and outcome.status == "done", (outcome.message, outcome.log)
    assert recorder.events[-1] is outcome and outcome.exit_code == 0
    assert [p.stage for p in recorder.progress()][0] == "read"
    train = recorder.progress("train")
    assert train and train[-1].done == train[-1].total == 2
    assert any(p.eta_s is not None for p in train) and train[-1].describe() == "Training: step 2 / 2"
    assert recorder.progress("evaluate")[-1].done == recorder.progress("evaluate")[-1].total
    assert outcome.version == "v1" and outcome.checkpoint == root / ".chimera" / "models" / "v1.safetensors"
    assert outcome.checkpoint.is_file()
    for side in ("before", "after"):
        assert 0 <= outcome.result[side]["mIoU"] <= 1 and outcome.result[side]["pixels_to_change_per_image"] >= 0
    index = read_index(root / ".chimera" / "models")
    assert [v["name"] for v in index["versions"]] == ["v1"] and index["active"] is None  # the app decides


def _interrupted_run(root, stop):
    """Start a long fine-tune, wait for its first training step, ``stop(runner)``, return the outcome."""
    runner, recorder = run(finetune_command(root, extra=[*TINY_RUN, "--iterations", "400"]))
    try:
        recorder.wait_for(lambda e: isinstance(e, FinetuneProgress) and e.stage == "train" and e.done >= 1)
        stop(runner)
        outcome = runner.wait(TIMEOUT)
    finally:
        if runner.process.poll() is None:
            runner.process.kill()
    assert recorder.events[-1] is outcome
    return outcome


def test_cancel_leaves_the_previous_model_active_and_the_index_unchanged(finetuned):
    root = finetuned[0]
    models = root / ".chimera" / "models"
    set_active(models, "v1")  # the model in use before Improve model
    index_bytes = (models / "index.json").read_bytes()
    before = _project_files(root / ".chimera")
    outcome = _interrupted_run(root, FinetuneRunner.cancel)
    assert outcome.status == "cancelled" and outcome.exit_code == 130  # SIGINT: the trainer saved and stopped
    assert "Nothing was changed" in outcome.message
    assert (models / "index.json").read_bytes() == index_bytes
    assert _project_files(root / ".chimera") == before
    assert read_index(models)["active"] == "v1"


def test_a_killed_finetune_is_a_crash_and_leaves_the_project_intact(finetuned):
    root = finetuned[0]
    models = root / ".chimera" / "models"
    set_active(models, "v1")
    before = _project_files(root / ".chimera")
    outcome = _interrupted_run(root, lambda runner: os.kill(runner.process.pid, signal.SIGKILL))
    assert outcome.status == "crashed" and outcome.exit_code == -signal.SIGKILL
    assert "killed (SIGKILL)" in outcome.message and "Nothing was changed" in outcome.message
    assert _project_files(root / ".chimera") == before
    assert read_index(models)["active"] == "v1" and len(read_index(models)["versions"]) == 1


def test_a_refusal_is_the_trainers_message_not_a_traceback(base_checkpoint, tmp_path):  # noqa: F811
    root = tmp_path / "proj"
    make_project(root, 3, 2, model=base_checkpoint)
    runner, _ = run(finetune_command(root, extra=TINY_RUN))
    outcome = runner.wait(TIMEOUT)
    assert outcome.status == "failed" and outcome.exit_code == 1
    assert outcome.message.startswith("too few human-verified images to fine-tune: 2 of the needed 3")
    assert "Traceback" not in outcome.message and "chimera-train:" not in outcome.message
    assert not (root / ".chimera" / "models").exists()


SLEEPER = """
import signal, sys, time
for name in sys.argv[1:]:
    signal.signal(getattr(signal, name), signal.SIG_IGN)
print('{"event": "note", "message": "ready"}', file=sys.stderr, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("ignored, code", [([], -signal.SIGINT), (["SIGINT"], -signal.SIGTERM),
                                           (["SIGINT", "SIGTERM"], -signal.SIGKILL)])
def test_cancel_escalates_from_sigint_to_sigterm_to_sigkill(ignored, code):
    runner, recorder = run([sys.executable, "-c", SLEEPER, *ignored], interrupt_grace_s=0.5, terminate_grace_s=0.5)
    recorder.wait_for(lambda e: e == FinetuneNote("ready"), timeout=30)
    started = time.monotonic()
    runner.cancel()
    outcome = runner.wait(30)
    assert outcome.status == "cancelled" and outcome.exit_code == code and time.monotonic() - started < 10
    assert not runner.running


def test_progress_lines_and_other_lines():
    line = '{"event": "progress", "stage": "train", "done": 120, "total": 400, "elapsed_s": 31.2, "eta_s": 72.8}'
    assert parse_progress_line(line) == FinetuneProgress("train", 120, 400, 31.2, 72.8)
    assert parse_progress_line('{"event": "progress", "stage": "read", "done": 0, "total": 3, "eta_s": null}') \
        == FinetuneProgress("read", 0, 3, 0.0, None)
    assert parse_progress_line('{"event": "note", "message": "left out"}') == FinetuneNote("left out")
    for other in ("WARNING:root:Model configuration not found", "{not json", "[1, 2]", '{"event": "progress"}',
                  "chimera-train: too few", ""):
        assert parse_progress_line(other) is None
    assert FinetuneProgress("evaluate", 3, 12).describe() == "Measuring on the held-out images: 3 / 12"


def test_exit_statuses_become_outcomes():
    result = json.dumps({"version": "v2", "checkpoint": "/p/.chimera/models/v2.safetensors"})
    done = classify_exit(0, result, [], cancel_requested=False)
    assert done.status == "done" and done.version == "v2" and done.checkpoint.name == "v2.safetensors"
    assert classify_exit(0, "not json", [], False).status == "crashed"
    refused = classify_exit(1, "", ["WARNING:root:x", "chimera-train: a class without pixels"], False)
    assert (refused.status, refused.message) == ("failed", "a class without pixels")
    traceback = ["Traceback (most recent call last):", '  File "x.py"', "ValueError: boom"]
    assert classify_exit(1, "", traceback, False).status == "crashed"
    assert classify_exit(-9, "", [], False).message.startswith("The fine-tune was killed (SIGKILL)")
    assert classify_exit(-9, "", [], True).status == "cancelled"
    assert classify_exit(130, "", [], False).status == "cancelled"
    assert classify_exit(3, "", [], False).message.startswith("The fine-tune crashed (exit status 3)")


def test_a_command_that_cannot_start_is_reported_once(tmp_path):
    events = []
    runner = FinetuneRunner([str(tmp_path / "no-such-python"), "-m", "x"], events.append)
    assert not runner.start() and not runner.running
    assert len(events) == 1 and isinstance(events[0], FinetuneOutcome) and events[0].status == "crashed"
    assert "Could not start" in events[0].message


@pytest.fixture
def sigint_ignored():
    """The app as a shell starts a background job ("chimera-app &"): SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_cancel_while_the_trainer_starts_is_not_lost_when_the_app_ignores_sigint(
        base_checkpoint, tmp_path, sigint_ignored):  # noqa: F811
    root = tmp_path / "proj"
    make_project(root, 4, 4, model=base_checkpoint)
    runner, recorder = run(finetune_command(root, extra=[*TINY_RUN, "--iterations", "400"]))
    started = time.monotonic()
    runner.cancel()  # "Starting the trainer…": no line read yet
    outcome = runner.wait(60)
    assert outcome is not None and time.monotonic() - started < 15, "SIGINT was lost; SIGTERM stopped it"
    # 130: chimera-train's own exit; -SIGINT: before Python set up its handler; 1: Python's own
    # KeyboardInterrupt in its start-up (runpy), before chimera-train's first line. Never SIGTERM.
    assert outcome.status == "cancelled" and outcome.exit_code in (130, -signal.SIGINT, 1), outcome
    assert outcome.message.startswith("Stopped before training began") and "resumes" not in outcome.message
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # the app's own disposition is as it was
    assert not (root / ".chimera" / "models").exists()


def test_the_child_gets_sigint_at_its_default_from_any_thread(sigint_ignored):
    # Python installs its KeyboardInterrupt handler only when it starts with SIGINT at the default.
    probe = "import signal, sys; sys.exit(0 if signal.getsignal(signal.SIGINT) is signal.default_int_handler else 5)"
    codes = []

    def start():
        runner = FinetuneRunner([sys.executable, "-c", probe], lambda event: None)
        assert runner.start()
        codes.append(runner.wait(60).exit_code)

    start()  # the main thread: SIGINT handled by a no-op while the child starts (exec resets it)
    thread = threading.Thread(target=start)  # another thread: the child resets it before exec
    thread.start()
    thread.join(60)
    assert codes == [0, 0]
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # the app's own disposition is as it was


def test_a_cancelled_refusal_is_the_refusal_and_titles_are_not_repeated():
    refusal = FinetuneRefusal("empty_classes", {"classes": ["triangle"], "held_out": ["img03.png"]})
    outcome = classify_exit(1, "", ["chimera-train: no person-decided pixels of 'triangle'"], True, False, refusal)
    assert outcome.status == "failed" and outcome.refusal == refusal
    for status_code, cancel, started in ((130, True, True), (-2, True, False), (130, False, True)):
        outcome = classify_exit(status_code, "", [], cancel, started)
        assert outcome.title == "Cancelled" and not outcome.message.startswith("Cancelled")
        assert ("resumes" in outcome.message) == started
    assert parse_progress_line('{"event": "refused", "reason": "too_few_images", "verified": 1, "needed": 3, '
                               '"message": "x"}') == FinetuneRefusal("too_few_images", {"verified": 1, "needed": 3,
                                                                                        "message": "x"})


def test_a_refusal_arrives_with_its_reason_in_fields(base_checkpoint, tmp_path):  # noqa: F811
    from chimera_app.project import Project

    root = tmp_path / "proj"
    make_project(root, 4, 4, model=base_checkpoint)
    with Project.open(root) as project:
        project.classes.add("star")  # nobody labelled it
        project.save_meta()
    runner, _ = run(finetune_command(root, extra=TINY_RUN))
    outcome = runner.wait(TIMEOUT)
    assert outcome.status == "failed" and outcome.refusal is not None, outcome
    assert outcome.refusal.reason == "empty_classes" and outcome.refusal.details["classes"] == ["star"]
    assert len(outcome.refusal.details["held_out"]) == 1 and not outcome.refusal.details["all_classes"]
