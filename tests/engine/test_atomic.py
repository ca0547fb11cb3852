"""Atomic writes: new content lands whole, or the old file survives and no temp file is left."""

from __future__ import annotations

import errno
import json
import os

import pytest

from chimera_engine import atomic
from chimera_engine.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text


def _no_temp_files(directory) -> bool:
    return all(not p.name.endswith(".tmp") for p in directory.iterdir())


def test_writes_bytes_text_and_json(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "b.txt", "héllo\n")
    atomic_write_json(tmp_path / "c.json", {"name": "çà", "n": [1, 2]})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    text = (tmp_path / "c.json").read_text(encoding="utf-8")
    assert "çà" in text  # ensure_ascii=False keeps it readable
    assert json.loads(text) == {"name": "çà", "n": [1, 2]}
    assert _no_temp_files(tmp_path)


def test_creates_parent_directories_and_replaces(tmp_path):
    target = tmp_path / "x" / "y" / "f.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert _no_temp_files(target.parent)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_keeps_permissions_of_replaced_file(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    os.chmod(target, 0o640)
    atomic_write_text(target, "new")
    assert target.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_disk_full_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch, failing):
    target = tmp_path / "project.json"
    target.write_text("old content")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, failing, disk_full)
    with pytest.raises(OSError) as info:
        atomic_write_json(target, {"big": "x" * 100_000})
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert target.read_text() == "old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project.json"]


def test_partial_writes_are_completed(tmp_path, monkeypatch):
    real_write = os.write

    def short_write(fd, data):  # the OS may accept fewer bytes than offered
        return real_write(fd, bytes(data[:7]))

    monkeypatch.setattr(atomic.os, "write", short_write)
    atomic_write_bytes(tmp_path / "f.bin", bytes(range(256)) * 3)
    monkeypatch.undo()
    assert (tmp_path / "f.bin").read_bytes() == bytes(range(256)) * 3


def test_unserialisable_json_touches_nothing(tmp_path):
    target = tmp_path / "f.json"
    target.write_text("old")
    with pytest.raises(ValueError):
        atomic_write_json(target, {"x": float("nan")})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"x": object()})
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]
