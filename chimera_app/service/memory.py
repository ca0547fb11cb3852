"""Give freed C-heap memory back to the OS (glibc's ``malloc_trim``).

Encoding an image allocates and frees hundreds of MB (window activations, full-size maps), which
glibc otherwise keeps resident (~150-300 MB measured after a 12 MP image). Other C libraries need
no help: there this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

TRIM_MIN_FREE = 16 << 20  # below this, trimming would only cost page faults later


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.lru_cache(maxsize=1)
def _glibc():
    """(malloc_trim, mallinfo2 or None) of glibc; None elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    info = getattr(libc, "mallinfo2", None)  # glibc >= 2.33
    if info is not None:
        info.restype = _MallInfo2
    return trim, info


def release_free_memory(min_free: int = TRIM_MIN_FREE) -> bool:
    """Hand memory that is freed but still held by the C heap back to the OS, when at least
    ``min_free`` bytes are (~5 ms). True if it trimmed."""
    libc = _glibc()
    if libc is None:
        return False
    trim, info = libc
    if info is not None and info().fordblks < min_free:
        return False  # too little to matter: the pages would only be faulted in again
    trim(0)
    return True
