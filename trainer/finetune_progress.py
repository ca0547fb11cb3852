"""Progress of a fine-tune on stderr, with an ETA: a tqdm bar for people, JSON lines for the app.

``--progress json`` writes one object per line, at most every ``interval`` seconds per stage and
always at a stage's end, e.g.::

    {"event": "progress", "stage": "train", "done": 120, "total": 400, "elapsed_s": 31.2, "eta_s": 72.8}
    {"event": "note", "message": "..."}

The ETA is the stage's mean time per unit so far times the units left (``null`` before the first).
"""

from __future__ import annotations

import json
import sys
import time

MODES = ("bar", "json", "none")


class Progress:
    def __init__(self, mode: str = "bar", stream=None, interval: float = 0.5):
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode, self.stream, self.interval = mode, stream or sys.stderr, interval
        self._bar = None
        self._stage, self._total, self._done, self._start, self._last = "", 0, 0, 0.0, 0.0

    def note(self, message: str) -> None:
        if self.mode == "json":
            self._emit({"event": "note", "message": message})
        elif self.mode == "bar":
            print(f"note: {message}", file=self.stream, flush=True)

    def stage(self, name: str, total: int, done: int = 0) -> None:
        """Start a stage of ``total`` units, ``done`` of them already done (a resumed run)."""
        self.close()
        self._stage, self._total, self._done = name, int(total), int(done)
        self._start = self._last = time.perf_counter()
        self._base = int(done)  # units done before this call: not counted in the rate
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=done, desc=name, unit="it" if name == "train" else "img",
                             file=self.stream, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self._done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "json":
            now = time.perf_counter()
            if now - self._last >= self.interval or self._done >= self._total:
                self._last = now
                self._emit(self.snapshot())

    def snapshot(self) -> dict:
        elapsed = time.perf_counter() - self._start
        counted = self._done - self._base
        eta = elapsed / counted * max(0, self._total - self._done) if counted > 0 else None
        return {"event": "progress", "stage": self._stage, "done": self._done, "total": self._total,
                "elapsed_s": round(elapsed, 2), "eta_s": None if eta is None else round(eta, 1)}

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _emit(self, record: dict) -> None:
        print(json.dumps(record), file=self.stream, flush=True)
