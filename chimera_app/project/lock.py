"""One writer per project: an OS lock on ``.chimera/lock``.

``fcntl.flock`` (POSIX) or ``msvcrt.locking`` (Windows) hold the lock, so the OS releases it when
the holder exits in any way, SIGKILL and power loss included: no stale lock to clean up by hand.
flock belongs to an open file, not to a process, so a second open in the same process is refused
too. The file's text ("pid PID on HOST") only names the holder in the error message.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from chimera_app.project.errors import ProjectLockedError

__all__ = ["ProjectLock"]

# Windows locks byte ranges and a locked byte cannot be read; lock one far past the text instead.
_WINDOWS_LOCK_OFFSET = 1 << 30


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)


class ProjectLock:
    """Held from construction until ``release()``; raises ProjectLockedError if someone holds it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
        if not _try_lock(fd):
            holder = self._holder(fd)
            os.close(fd)
            raise ProjectLockedError(f"this project is already open ({holder}); close it there first "
                                     f"(lock file: {path})")
        self._fd = fd
        text = f"pid {os.getpid()} on {socket.gethostname()}\n".encode()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, text)

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            text = os.read(fd, 200).decode("utf-8", "replace").strip()
        except OSError:
            text = ""
        return f"by {text}" if text else "by a program that did not say which"

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def release(self) -> None:
        if self._fd < 0:
            return
        try:
            _unlock(self._fd)
        finally:
            os.close(self._fd)
            self._fd = -1
