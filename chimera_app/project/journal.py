"""The edit journal: committed edits appended and fsynced, so a crash or a kill loses none of them.

File ``journal.log``, a sequence of records, each::

    4 bytes   magic b"CJR1"
    4 bytes   payload length N (uint32, little-endian)
    4 bytes   CRC-32 of the payload (zlib.crc32, uint32, little-endian)
    N bytes   payload:
                4 bytes  header length M (uint32, little-endian)
                M bytes  header, UTF-8 JSON: {"image": rel, "y0", "x0", "height", "width",
                         "image_height", "image_width", "state"}
                height*width*2 bytes  labels in the box, uint16 little-endian, row-major
                height*width   bytes  provenance in the box, uint8, row-major

A record holds the document's values inside the patch's box after the edit, so replaying the
records of an image in order over its saved maps gives the document as it was. A record that is cut
short or fails its checksum (the process died while appending it) ends the journal: it and anything
after it are ignored, and the file is cut back to the last intact record.

Records are encoded and scanned by ``chimera_engine.formats.project_files``, the one reader the
trainer uses too; this module owns the file: appending, the per-image index, compaction.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from chimera_engine.atomic import atomic_write_bytes
from chimera_engine.formats.project_files import FRAME_SIZE, JournalRecord, decode_payload, encode_record, scan_journal

__all__ = ["Journal", "JournalRecord"]


@dataclass(frozen=True)
class _Entry:
    offset: int
    length: int
    seq: int  # per image, counting every record appended since the journal was opened
    state: str


class Journal:
    """An append-only journal file with an index of the intact records per image.

    Thread-safe: an editor may append on its GUI thread while a saver thread drops what it saved.
    ``mark(image)`` taken when a document is copied for saving and passed to ``drop`` forgets only
    the records that copy contains, never an edit appended meanwhile.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dropped_bytes = 0  # bytes of a torn or damaged tail ignored at open
        self._lock = threading.RLock()
        data = path.read_bytes() if path.exists() else b""
        found, end = scan_journal(data)
        self._index: dict[str, list[_Entry]] = {}
        self._seq: dict[str, int] = {}
        for offset, length, image, state in found:
            self._add(image, offset, length, state)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
        try:
            if end < len(data):
                self.dropped_bytes = len(data) - end
                os.ftruncate(fd, end)  # so the next record follows the last intact one
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._size = end

    def images(self) -> list[str]:
        """Images with records, in the order of their first record."""
        with self._lock:
            return list(self._index)

    def records(self, image: str) -> list[JournalRecord]:
        """The image's records, oldest first."""
        with self._lock:
            return [decode_payload(self._read(e.offset, e.length)[FRAME_SIZE:]) for e in self._index.get(image, [])]

    def mark(self, image: str) -> int:
        """A position in the image's records: ``drop(image, mark)`` keeps every record appended later."""
        with self._lock:
            return self._seq.get(image, 0)

    def last_state(self, image: str, since: int = 0) -> str | None:
        """The state in the image's newest record at or after the mark ``since``; None if none."""
        with self._lock:
            entries = [e for e in self._index.get(image, []) if e.seq >= since]
            return entries[-1].state if entries else None

    def append(self, record: JournalRecord) -> None:
        """Append and fsync: when this returns, the record survives a kill or a power cut.

        Raises OSError (a full disk: ENOSPC) when it cannot; the part written is cut off again, so
        the journal holds exactly the records appended before and the caller can undo the edit."""
        data = encode_record(record)
        with self._lock:
            try:
                os.lseek(self._fd, self._size, os.SEEK_SET)
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view):]
                os.fsync(self._fd)
            except OSError:
                try:
                    os.ftruncate(self._fd, self._size)  # frees what was written: no torn tail
                except OSError:
                    pass  # the tail fails its CRC at the next open and is ignored there
                raise
            self._add(record.image, self._size, len(data), record.state)
            self._size += len(data)

    def drop(self, image: str, upto: int | None = None) -> None:
        """Forget an image's records older than the mark ``upto`` (all when None): its maps were
        saved with them. The other records are kept."""
        with self._lock:
            entries = self._index.get(image, [])
            gone = [e for e in entries if upto is None or e.seq < upto]
            if not gone:
                return
            before = dict(self._index)
            kept = [e for e in entries if e not in gone]
            if kept:
                self._index[image] = kept
            else:
                del self._index[image]
            try:
                if not self._index:
                    os.ftruncate(self._fd, 0)
                    os.fsync(self._fd)
                    self._size = 0
                    return
                self._rewrite()
            except OSError:
                # Not compacted (a full disk): the records stay, in the file and in the index, and
                # the next save of the image drops them. Replaying them meanwhile is harmless.
                self._index = before
                raise

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def _add(self, image: str, offset: int, length: int, state: str) -> None:
        seq = self._seq.get(image, 0)
        self._seq[image] = seq + 1
        self._index.setdefault(image, []).append(_Entry(offset, length, seq, state))

    def _rewrite(self) -> None:
        """Write the file anew with the indexed records only, in their order."""
        kept = sorted(((e, name) for name, entries in self._index.items() for e in entries),
                      key=lambda pair: pair[0].offset)
        chunks = [self._read(e.offset, e.length) for e, _ in kept]
        # Rewritten as a whole, atomically: a crash now leaves either the old or the new journal.
        # Closed first: Windows cannot replace a file that is open.
        os.close(self._fd)
        try:
            atomic_write_bytes(self.path, b"".join(chunks))
        finally:
            self._fd = os.open(self.path, os.O_RDWR | getattr(os, "O_BINARY", 0))
        self._index, pos = {}, 0
        for (entry, name), chunk in zip(kept, chunks):
            self._index.setdefault(name, []).append(_Entry(pos, len(chunk), entry.seq, entry.state))
            pos += len(chunk)
        self._size = pos

    def _read(self, offset: int, length: int) -> bytes:
        os.lseek(self._fd, offset, os.SEEK_SET)
        parts, left = [], length
        while left:
            chunk = os.read(self._fd, left)
            if not chunk:
                raise OSError(f"{self.path} is shorter than its index (changed by another program?)")
            parts.append(chunk)
            left -= len(chunk)
        return b"".join(parts)
