"""Ctrl+C for Chimera's command-line tools (chimera-train, chimera-label). Cheap to import: no torch.

``raise_on_interrupt()`` makes SIGINT raise KeyboardInterrupt from then on, also when whoever started
the tool ignored SIGINT (a job a shell started in the background, a program that ignores it): Python
then leaves it ignored, and a cancel was lost.

A KeyboardInterrupt raised inside a library's C code can come back as another error: torch, while
safetensors builds a tensor, reports "could not determine the shape of object type ..." and the
interrupt is gone (seen in the suite). ``interrupted()`` remembers that the signal came, so a tool
reports such an error as the interrupt it is, not as a damaged file.
"""

from __future__ import annotations

import signal
import threading

_seen = threading.Event()


def _on_interrupt(signum, frame) -> None:
    _seen.set()
    signal.default_int_handler(signum, frame)


def raise_on_interrupt() -> None:
    """Install the handler and forget earlier interrupts (a tool's ``main`` calls it first)."""
    _seen.clear()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_interrupt)


def interrupted() -> bool:
    """Whether SIGINT came since ``raise_on_interrupt()``."""
    return _seen.is_set()
