"""One writer per project: an OS lock on the project folder itself and on ``.chimera/lock``.

``fcntl.flock`` (POSIX) or ``msvcrt.locking`` (Windows) hold the lock, so the OS releases it when
the holder exits in any way, SIGKILL and power loss included: no stale lock to clean up by hand.
flock belongs to an open file, not to a process, so a second open in the same process is refused
too. The file's text ("pid PID on HOST") only names the holder in the error message.

A lock on a file can be side-stepped by deleting the file (the holder keeps the lock on a deleted
inode and a newcomer locks a fresh one). On POSIX the project folder itself is locked first, which
deleting ``lock`` does not undo; ``check()``, called before every write, refuses to write when the
locked folder (on Windows: the lock file, which Windows does not let anyone delete while open) was
removed or replaced, so two writers never interleave.
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


def _lock_folder(folder: Path) -> int | None:
    """An fd of ``folder`` holding an exclusive flock; None where folders cannot be locked (Windows)
    or the folder lock is already taken (then -1)."""
    if sys.platform == "win32" or not hasattr(os, "O_DIRECTORY"):
        return None
    import fcntl

    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return -1
    return fd


class ProjectLock:
    """Held from construction until ``release()``; raises ProjectLockedError if someone holds it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._folder_fd = _lock_folder(path.parent)
        if self._folder_fd == -1:  # held elsewhere: read who, but never recreate a deleted lock file
            raise ProjectLockedError(f"this project is already open ({self._holder_of(path)}); close it there "
                                     f"first (lock file: {path})")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
        if not _try_lock(fd):
            holder = self._holder(fd)
            os.close(fd)
            if self._folder_fd is not None and self._folder_fd >= 0:
                os.close(self._folder_fd)
            raise ProjectLockedError(f"this project is already open ({holder}); close it there first "
                                     f"(lock file: {path})")
        self._fd = fd
        text = f"pid {os.getpid()} on {socket.gethostname()}\n".encode()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, text)

    @classmethod
    def _holder_of(cls, path: Path) -> str:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError:
            return "by a program whose lock file was deleted"
        try:
            return cls._holder(fd)
        finally:
            os.close(fd)

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

    def check(self) -> None:
        """ProjectLockedError when the project folder or the lock file is no longer the one locked
        (deleted or replaced while open): another Chimera may then be writing there."""
        # With a folder lock (POSIX) the folder is what excludes others; else the lock file is.
        pairs = [(self._folder_fd, self.path.parent)] if self._folder_fd is not None else [(self._fd, self.path)]
        for fd, path in pairs:
            held = os.fstat(fd)
            try:
                now = os.stat(path)
            except OSError:
                now = None
            if now is None or (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
                raise ProjectLockedError(f"{path} was removed or replaced while this project was open, so another "
                                         "program may be writing to it; nothing was written. Close the project "
                                         "and open it again")

    def release(self) -> None:
        if self._fd < 0:
            return
        try:
            _unlock(self._fd)
        finally:
            os.close(self._fd)
            self._fd = -1
            if self._folder_fd is not None:
                os.close(self._folder_fd)  # closing the last fd releases its flock
                self._folder_fd = None
