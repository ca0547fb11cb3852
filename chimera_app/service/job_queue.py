"""The engine thread's job queue: most urgent first, first come first served within a priority,
and a new request drops the queued ones it supersedes (``Request.supersedes``)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence

from chimera_app.service.requests import Request


class JobQueue:
    """Thread-safe. Producers (the GUI thread, background threads) hold the lock for microseconds,
    never while a job runs."""

    def __init__(self):
        self._jobs: list[tuple[int, int, Request]] = []  # (priority, arrival, request)
        self._cond = threading.Condition()
        self._arrivals = itertools.count(1)
        self._stopped = False

    def put(self, requests: Request | Sequence[Request], after: int | None = None) -> int:
        """Queue ``requests`` (dropping queued jobs any of them supersedes); returns the arrival
        number of the last one. ``after``: a follow-up keeps its parent's place (that arrival
        number) instead of queuing behind what came in meanwhile."""
        batch = [requests] if isinstance(requests, Request) else list(requests)
        with self._cond:
            if self._stopped:
                return 0
            self._jobs = [job for job in self._jobs if not any(new.supersedes(job[2]) for new in batch)]
            arrival = after or 0
            for request in batch:
                arrival = after if after is not None else next(self._arrivals)
                self._jobs.append((request.priority, arrival, request))
            self._cond.notify()
            return arrival

    def take(self) -> tuple[int, Request] | None:
        """``(arrival, request)`` of the most urgent job; blocks while there is none; None once stopped."""
        with self._cond:
            while not self._jobs and not self._stopped:
                self._cond.wait()
            if self._stopped:
                return None
            job = min(self._jobs, key=lambda j: (j[0], j[1]))
            self._jobs.remove(job)
            return job[1], job[2]

    def pending(self) -> list[Request]:
        """The queued requests, most urgent first."""
        with self._cond:
            return [job[2] for job in sorted(self._jobs, key=lambda j: (j[0], j[1]))]

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._jobs.clear()
            self._cond.notify_all()
