"""Exceptions → what the user is told: one classification for the app and ``chimera-label``.

Kinds: ``image`` (a file that cannot be read), ``memory`` (out of CPU or GPU memory), ``model`` (a
bad model name, missing weights, a broken checkpoint), ``chimera_engine`` (anything else: a bug, reported
with its exception type so a bug report says what broke).
"""

from __future__ import annotations

import gc
import logging

from chimera_engine.errors import CheckpointError, ImageLoadError, ModelNameError, WeightsNotFoundError

log = logging.getLogger(__name__)

KINDS = ("image", "memory", "model", "engine")


def _out_of_memory_types() -> tuple[type[BaseException], ...]:
    import torch  # here: classifying an error is the only reason this module needs torch

    # torch >= 2.5 has torch.OutOfMemoryError; older releases only the CUDA one (a RuntimeError subclass).
    return tuple({getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError,
                  MemoryError})


def error_kind(exc: BaseException) -> tuple[str, str]:
    """``(kind, message)``. User-caused errors keep their message as it is (written to be shown)."""
    if isinstance(exc, ImageLoadError):
        return "image", str(exc)
    # MPS (and some CUDA paths) report exhaustion as a plain RuntimeError.
    if isinstance(exc, _out_of_memory_types()) or (isinstance(exc, RuntimeError)
                                                   and "out of memory" in str(exc).lower()):
        return "memory", f"out of memory: {exc}".strip() if str(exc) else "out of memory"
    if isinstance(exc, (WeightsNotFoundError, ModelNameError, CheckpointError)):
        return "model", str(exc)
    return "engine", f"{type(exc).__name__}: {exc}"


def recover(exc: BaseException, what: str) -> tuple[str, str]:
    """Classify ``exc`` and clean up after it: a bug is logged with its traceback, running out of
    memory frees what the collector and the GPU cache can. Returns ``(kind, message)``."""
    kind, message = error_kind(exc)
    if kind == "engine":
        log.error("%s failed", what, exc_info=exc)
    elif kind == "memory":
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return kind, message
