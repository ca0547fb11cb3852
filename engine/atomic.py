"""Atomic file writes: a reader sees the old file or the new one, never a half-written one.

The data goes to a temporary file in the target's own directory (so ``os.replace`` is a rename
on one file system, atomic on POSIX and Windows), is flushed and fsynced, and then replaces the
target. On any error the temporary file is removed, the previous file is left as it was and the
exception (an ``OSError`` such as ENOSPC for a full disk) propagates to the caller.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "stage_bytes", "fsync_directory"]


def _current_umask() -> int:
    """The process umask (read once at import; reading it means setting it, which races threads)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files with mode 0600; a new file should get the usual 0666 & ~umask instead.
_NEW_FILE_MODE = 0o666 & ~_current_umask()


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable where the OS lets a directory be opened and fsynced (not Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories; the rename itself already happened
    finally:
        os.close(fd)


def _target_mode(path: Path) -> int:
    """Keep the permissions of a file being replaced; new files get 0666 minus the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return _NEW_FILE_MODE


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, creating missing parent directories.

    Raises:
        OSError: the write failed (disk full, permission denied, ...); ``path`` is untouched and
            no temporary file is left behind.
    """
    target = Path(path)
    staged = stage_bytes(target.parent, data, target.name)
    try:
        os.chmod(staged, _target_mode(target))
        os.replace(staged, target)
    except BaseException:
        # BaseException too: a KeyboardInterrupt mid-write must not leave a stray temp file.
        try:
            os.unlink(staged)
        except OSError:
            pass
        raise
    _fsync_directory(target.parent)


def stage_bytes(directory: str | os.PathLike[str], data: bytes, name: str = "staged") -> Path:
    """Write ``data`` durably (fsynced) to a new temporary file in ``directory`` and return its path,
    for a caller that renames several staged files into place as one commit. On any error the file
    is removed and the OSError propagates."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp_name, _NEW_FILE_MODE)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    return Path(tmp_name)


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make renames into ``directory`` durable (a no-op where directories cannot be fsynced)."""
    _fsync_directory(Path(directory))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically (newlines written as given, no translation)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as readable UTF-8 JSON (indent=1, non-ASCII kept) to ``path`` atomically.

    NaN and infinity are refused (ValueError) rather than written as invalid JSON. The object is
    serialised before anything touches the disk, so a serialisation error leaves no trace.
    """
    text = json.dumps(obj, ensure_ascii=False, indent=1, allow_nan=False) + "\n"
    atomic_write_text(path, text)
