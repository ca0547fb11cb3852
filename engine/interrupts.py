"""Ctrl+C for Chimera's command-line tools (chimera-train, chimera-label). Cheap to import: no torch.

``raise_on_interrupt()`` makes SIGINT raise KeyboardInterrupt from then on, also when whoever started
the tool ignored SIGINT (a job a shell started in the background, a program that ignores it): Python
then leaves it ignored, and a cancel was lost.

A KeyboardInterrupt raised inside a library's C code can come back as another error: torch, while
safetensors builds a tensor, reports "could not determine the shape of object type ..." and the
interrupt is gone (seen in the suite). Inside ``watching()`` (a tool's ``main``), ``interrupted()``
remembers that the signal came, so the tool reports such an error as the interrupt it is, not as a
damaged file or a skipped image. Outside it, ``interrupted()`` is False: an earlier run's Ctrl+C in the
same process (a test suite, a program that calls ``main``) never turns a later real failure into one.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_seen = threading.Event()
_watching = threading.Event()


def _on_interrupt(signum, frame) -> None:
    if _watching.is_set():
        _seen.set()
    signal.default_int_handler(signum, frame)


def raise_on_interrupt() -> None:
    """Install the handler (from the main thread; elsewhere Python refuses and nothing changes)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_interrupt)


@contextlib.contextmanager
def watching() -> Iterator[None]:
    """A tool's run: SIGINT raises inside, and ``interrupted()`` says whether it came."""
    raise_on_interrupt()
    _seen.clear()
    _watching.set()
    try:
        yield
    finally:
        _watching.clear()
        _seen.clear()


def interrupted() -> bool:
    """Whether SIGINT came during the current ``watching()``."""
    return _seen.is_set()
