"""Runs ``chimera-train finetune`` in a subprocess for the app's **Improve model**, Qt-free.

    runner = FinetuneRunner(finetune_command(images_dir, device="cpu"), emit=events.append)
    runner.start()          # emit(FinetuneProgress | FinetuneNote) as the trainer reports, from a reader thread
    runner.cancel()         # SIGINT (the trainer saves and exits 130), then SIGTERM, then SIGKILL
    outcome = runner.wait() # also emitted last: FinetuneOutcome(status, message, result, ...)

The app never imports the trainer: it starts ``python -m chimera_trainer.cli finetune --progress json
--json`` and reads what the trainer prints, which is its whole interface:

- **stderr**: one JSON object per line, ``{"event": "progress", "stage": "train", "done": 120,
  "total": 400, "elapsed_s": 31.2, "eta_s": 72.8}`` (stages ``read``, ``train``, ``evaluate``),
  ``{"event": "note", "message": ...}`` or, before a refusal, ``{"event": "refused", "reason":
  "empty_classes", "classes": [...], "held_out": [...], ...}`` (kept as the outcome's ``refusal``:
  the app words it for its users and offers the way forward); any other line (a warning,
  ``chimera-train: <why it cannot fine-tune>``, a traceback) is kept for the outcome.
- **stdout**: with ``--json``, the result (new version, checkpoint, α, held-out metrics before and
  after) as one JSON document at the end.
- **exit status**: 0 a version was written, 1 cannot fine-tune (the message says why), 2 bad
  arguments, 130 interrupted (saved: the same command resumes), anything else a crash.

The child starts with SIGINT at its default even when the app ignores SIGINT (started in the
background by a shell), so a cancel during the trainer's start-up is never lost.

The trainer writes a version's files before it lists them in the index and never changes the
active version unless asked (the app does not ask), so a cancel, a crash or a kill at any moment
leaves the project and the model in use as they were; the outcome only has to say which it was.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130  # chimera-train's documented statuses
INTERRUPT_GRACE_S = 30.0  # after SIGINT: the trainer saves its run state, then exits 130
TERMINATE_GRACE_S = 5.0  # after SIGTERM, before SIGKILL
LOG_LINES = 200  # non-JSON stderr lines kept for the outcome
TITLES = {"done": "Finished", "failed": "Cannot improve the model", "cancelled": "Cancelled",
          "crashed": "The fine-tune stopped"}
STAGE_NAMES = {"read": "Reading the verified images", "train": "Training",
               "evaluate": "Measuring on the held-out images"}


@dataclasses.dataclass(frozen=True)
class FinetuneProgress:
    """One progress line of a stage: ``done`` of ``total`` units; ``eta_s`` None until known."""

    stage: str
    done: int
    total: int
    elapsed_s: float = 0.0
    eta_s: float | None = None

    def describe(self) -> str:
        """'Training: step 120 / 400', 'Measuring on the held-out images: 3 / 12'."""
        what = STAGE_NAMES.get(self.stage, self.stage.capitalize())
        unit = "step " if self.stage == "train" else ""
        return f"{what}: {unit}{self.done} / {self.total}"


@dataclasses.dataclass(frozen=True)
class FinetuneNote:
    message: str


@dataclasses.dataclass(frozen=True)
class FinetuneRefusal:
    """Why the trainer refuses, in fields: ``reason`` (``no_classes``, ``too_few_images``,
    ``empty_classes``, ``no_model``) and its ``details`` (e.g. ``classes``, ``held_out``)."""

    reason: str
    details: dict


@dataclasses.dataclass(frozen=True)
class FinetuneOutcome:
    """How a fine-tune ended. ``status``: ``done`` (a new version was written), ``failed`` (the
    trainer refused or could not go on, ``message`` says why), ``cancelled`` (stopped on request;
    nothing changed, the run resumes next time), ``crashed`` (killed or broke; nothing changed)."""

    status: str
    message: str
    exit_code: int | None = None
    result: dict[str, Any] | None = None  # the trainer's --json result when done
    log: str = ""  # the trainer's last non-progress stderr lines (warnings, a traceback)
    refusal: FinetuneRefusal | None = None  # when it failed: the trainer's reason in fields

    @property
    def title(self) -> str:
        """'Finished', 'Cancelled', 'Cannot improve the model', 'The fine-tune stopped'."""
        return TITLES.get(self.status, self.status)

    @property
    def version(self) -> str | None:
        return None if self.result is None else self.result.get("version")

    @property
    def checkpoint(self) -> Path | None:
        return None if self.result is None or "checkpoint" not in self.result else Path(self.result["checkpoint"])


Event = FinetuneProgress | FinetuneNote | FinetuneOutcome


def finetune_command(images: str | os.PathLike, project_dir: str | os.PathLike | None = None,
                     base: str | None = None, device: str | None = None, extra: Sequence[str] = (),
                     python: str | None = None) -> list[str]:
    """The argument list of the trainer subprocess (JSON progress on stderr, the result on stdout).
    ``base``: the model to start from (default: the trainer's choice, the project's model)."""
    command = [python or sys.executable, "-m", "chimera_trainer.cli", "finetune", "--project", str(images),
               "--progress", "json", "--json"]
    if project_dir is not None:
        command += ["--project-dir", str(project_dir)]
    if base:
        command += ["--base", str(base)]
    if device:
        command += ["--device", device]
    return command + [str(a) for a in extra]


def parse_progress_line(line: str) -> FinetuneProgress | FinetuneNote | FinetuneRefusal | None:
    """A progress, note or refusal record of the trainer's stderr; None for any other line."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    try:
        if record.get("event") == "progress":
            eta = record.get("eta_s")
            return FinetuneProgress(str(record["stage"]), int(record["done"]), int(record["total"]),
                                    float(record.get("elapsed_s") or 0.0), None if eta is None else float(eta))
        if record.get("event") == "note":
            return FinetuneNote(str(record.get("message", "")))
        if record.get("event") == "refused":
            details = {k: v for k, v in record.items() if k not in ("event", "reason")}
            return FinetuneRefusal(str(record["reason"]), details)
    except (KeyError, TypeError, ValueError):
        return None
    return None


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


NOTHING_CHANGED = "Nothing was changed: the model in use and the project are as they were."


def classify_exit(code: int, stdout: str, log_lines: Sequence[str], cancel_requested: bool,
                  training_started: bool = True, refusal: FinetuneRefusal | None = None) -> FinetuneOutcome:
    """The outcome of a finished trainer process from its exit status and output.
    ``training_started``: the trainer reported a training step range (a cancel after it leaves a
    run that the next Improve model resumes; one before it leaves nothing to resume).
    The message never repeats the outcome's ``title`` ("Cancelled"): they are shown together."""
    log = "\n".join(log_lines)
    said = [line.split(":", 1)[1].strip() for line in log_lines if line.startswith("chimera-train:")]
    traceback = any(line.startswith("Traceback") for line in log_lines)
    if code == EXIT_OK:
        try:
            result = json.loads(stdout)
        except ValueError:
            result = None
        if isinstance(result, dict) and result.get("version"):
            late = " (it finished before the cancel arrived)" if cancel_requested else ""
            return FinetuneOutcome("done", f"Wrote {result['version']}{late}", code, result, log)
        return FinetuneOutcome("crashed", "The fine-tune ended without writing a version or saying why. "
                               "Nothing was changed.", code, None, log)
    if code in (EXIT_FAILED, EXIT_USAGE) and said and not traceback:  # it refused (maybe before the cancel)
        return FinetuneOutcome("failed", "\n".join(said), code, None, log, refusal)
    if cancel_requested or code == EXIT_INTERRUPTED:  # asked by us, or e.g. Ctrl+C in the app's terminal
        if not training_started:
            return FinetuneOutcome("cancelled", f"Stopped before training began. {NOTHING_CHANGED}", code, None, log)
        return FinetuneOutcome("cancelled", f"{NOTHING_CHANGED} Improve model again resumes where it stopped "
                               "(unless the verified images changed meanwhile).", code, None, log)
    how = f"was killed ({_signal_name(code)})" if code < 0 else f"crashed (exit status {code})"
    return FinetuneOutcome("crashed", f"The fine-tune {how}. {NOTHING_CHANGED}", code, None, log)


def _restore_sigint() -> None:  # runs in the child between fork and exec
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def sigint_default_in_child():
    """Around ``Popen``: make the child start with SIGINT at its default when this process ignores
    it (a child inherits an ignored signal through exec, and Python then leaves it ignored).
    Yields the ``preexec_fn`` to pass (None when none is needed).

    On the main thread no preexec function is used (it is not safe with threads): exec resets a
    *handled* signal to the default, so SIGINT is handled by a no-op while the child is started,
    then ignored again. Elsewhere (signal handlers can only be set on the main thread) the child
    resets it itself before exec. Nothing to do on Windows (no SIGINT for a child without a console)."""
    if os.name != "posix" or signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield None
        return
    if threading.current_thread() is not threading.main_thread():
        yield _restore_sigint
        return
    signal.signal(signal.SIGINT, lambda *_: None)
    try:
        yield None
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


class FinetuneRunner:
    """One trainer subprocess. ``emit`` is called on the runner's threads: progress and notes as
    they come, the ``FinetuneOutcome`` last (exactly once, also when the process cannot start)."""

    def __init__(self, command: Sequence[str], emit: Callable[[Event], None], env: dict[str, str] | None = None,
                 cwd: str | os.PathLike | None = None, interrupt_grace_s: float = INTERRUPT_GRACE_S,
                 terminate_grace_s: float = TERMINATE_GRACE_S, niceness: int = 10):
        self.command, self.emit = [str(c) for c in command], emit
        self.env, self.cwd, self.niceness = env, cwd, niceness
        self.interrupt_grace_s, self.terminate_grace_s = interrupt_grace_s, terminate_grace_s
        self.process: subprocess.Popen | None = None
        self.outcome: FinetuneOutcome | None = None
        self.last_progress: FinetuneProgress | None = None
        self.training_started = False  # a "train" progress line arrived
        self.refusal: FinetuneRefusal | None = None
        self._log: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
        self._stdout: list[str] = []
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def running(self) -> bool:
        return self.process is not None and not self._done.is_set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def start(self) -> bool:
        """Start the subprocess; False (after emitting a ``crashed`` outcome) when it cannot start."""
        if self.process is not None:
            raise RuntimeError("this fine-tune was started already")
        env = {**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
        try:
            with sigint_default_in_child() as preexec:
                self.process = subprocess.Popen(self.command, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                                encoding="utf-8", errors="replace", preexec_fn=preexec)
        except OSError as exc:
            self._finish(FinetuneOutcome("crashed", f"Could not start the fine-tune: {exc.strerror or exc}"))
            return False
        if self.niceness and hasattr(os, "setpriority"):
            try:  # the app's engine and GUI come first: the trainer takes what they leave
                os.setpriority(os.PRIO_PROCESS, self.process.pid, self.niceness)
            except OSError:
                pass
        readers = [threading.Thread(target=self._read_stderr, name="chimera-finetune-stderr", daemon=True),
                   threading.Thread(target=self._read_stdout, name="chimera-finetune-stdout", daemon=True)]
        for thread in readers:
            thread.start()
        waiter = threading.Thread(target=self._wait, args=(readers,), name="chimera-finetune-wait", daemon=True)
        waiter.start()
        self._threads = [*readers, waiter]
        return True

    def cancel(self) -> None:
        """Ask the trainer to stop: SIGINT (it saves and exits 130); SIGTERM after
        ``interrupt_grace_s``, SIGKILL after ``terminate_grace_s`` more. Returns at once."""
        if not self.running or self._cancel.is_set():
            return
        self._cancel.set()
        threading.Thread(target=self._escalate, name="chimera-finetune-cancel", daemon=True).start()

    def wait(self, timeout: float | None = None) -> FinetuneOutcome | None:
        """The outcome once the process ended and its output was read; None on timeout."""
        self._done.wait(timeout)
        return self.outcome

    # -- inside ---------------------------------------------------------------------------------
    def _escalate(self) -> None:
        process = self.process
        steps = [(self._interrupt, self.interrupt_grace_s), (process.terminate, self.terminate_grace_s),
                 (process.kill, None)]
        for send, grace in steps:
            if process.poll() is not None:
                return
            try:
                send()
            except OSError:  # it ended meanwhile
                return
            if grace is None:
                return
            try:
                process.wait(grace)
                return
            except subprocess.TimeoutExpired:
                continue

    def _interrupt(self) -> None:
        if os.name == "posix":
            self.process.send_signal(signal.SIGINT)
        else:  # no SIGINT for a child without a console of its own: stop it (nothing is half-written)
            self.process.terminate()

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            event = parse_progress_line(line)
            if event is None:
                if line.strip():
                    self._log.append(line.rstrip("\n"))
                continue
            if isinstance(event, FinetuneRefusal):
                self.refusal = event
                continue
            if isinstance(event, FinetuneProgress):
                self.last_progress = event
                self.training_started |= event.stage in ("train", "evaluate")
            self.emit(event)

    def _read_stdout(self) -> None:
        self._stdout.append(self.process.stdout.read())

    def _wait(self, readers: list[threading.Thread]) -> None:
        code = self.process.wait()
        for thread in readers:
            thread.join()
        self._finish(classify_exit(code, "".join(self._stdout), list(self._log), self._cancel.is_set(),
                                   self.training_started, self.refusal))

    def _finish(self, outcome: FinetuneOutcome) -> None:
        self.outcome = outcome
        try:
            self.emit(outcome)
        finally:
            self._done.set()
