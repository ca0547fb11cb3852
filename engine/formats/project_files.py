"""Reading a project's files: one reader for the app's store (which writes them) and the trainer
(which reads them without taking the project's lock, while the app may have it open).

The format itself is documented in ``chimera_app/project/store.py``. What lives here is every rule
both sides must apply alike: which ``project.json`` is a project this Chimera can read, how a journal
record is framed (and where a torn tail ends the journal), and what ``commit.json`` — a save past its
commit point — holds, in its current and its earlier one-image form. Qt-free.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chimera_engine.errors import ChimeraError

__all__ = ["COMMIT_NAME", "DATA_DIR_NAME", "JOURNAL_NAME", "PROJECT_FORMAT", "PROJECT_VERSION", "FRAME_SIZE", "JournalRecord",
           "ProjectFileError", "decode_payload", "encode_record", "read_commit", "read_journal",
           "read_project_json", "scan_journal"]

PROJECT_FORMAT, PROJECT_VERSION = "chimera-project", 1
DATA_DIR_NAME = ".chimera"  # inside the image folder, unless a project folder is given
JOURNAL_NAME = "journal.log"
COMMIT_NAME = "commit.json"

_MAGIC = b"CJR1"
_FRAME = struct.Struct("<4sII")  # magic, payload length, CRC-32 of the payload
_HEADER_LEN = struct.Struct("<I")
_MAX_PAYLOAD = 2**31  # a larger length can only be garbage
FRAME_SIZE = _FRAME.size  # bytes before a record's payload


class ProjectFileError(ChimeraError):
    """A project file cannot be read: unreadable, not a project, damaged, or from a newer Chimera."""


def read_project_json(path: Path) -> dict:
    """``project.json`` as parsed JSON, once it is known to be a project of a version we can read."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ProjectFileError(f"cannot read {path}: {exc or 'nested too deeply'}") from exc
    if not isinstance(data, dict) or data.get("format") != PROJECT_FORMAT:
        raise ProjectFileError(f"{path} is not a Chimera project file")
    if not isinstance(data.get("version"), int) or data["version"] > PROJECT_VERSION:
        raise ProjectFileError(f"{path} was written by a newer Chimera (format version {data.get('version')}); "
                               "update Chimera to open it")
    return data


# -- the edit journal ----------------------------------------------------------------------------
@dataclass(frozen=True)
class JournalRecord:
    image: str
    y0: int
    x0: int
    labels: np.ndarray  # uint16 h x w
    provenance: np.ndarray  # uint8 h x w
    state: str
    image_shape: tuple[int, int]  # (height, width) of the whole document when it was recorded


def encode_record(record: JournalRecord) -> bytes:
    h, w = record.labels.shape
    header = json.dumps({"image": record.image, "y0": record.y0, "x0": record.x0, "height": h, "width": w,
                         "image_height": record.image_shape[0], "image_width": record.image_shape[1],
                         "state": record.state}).encode("utf-8")
    payload = b"".join([_HEADER_LEN.pack(len(header)), header,
                        np.ascontiguousarray(record.labels, dtype="<u2").tobytes(),
                        np.ascontiguousarray(record.provenance, dtype=np.uint8).tobytes()])
    return _FRAME.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload


def _header(payload: bytes) -> tuple[dict, int, int, int]:
    """(header, box height, box width, offset of the arrays); ValueError if they do not add up."""
    (size,) = _HEADER_LEN.unpack_from(payload)
    head = json.loads(payload[4:4 + size].decode("utf-8"))
    h, w = int(head["height"]), int(head["width"])
    if h < 0 or w < 0 or len(payload) != 4 + size + 3 * h * w or not isinstance(head["image"], str):
        raise ValueError("record length does not match its box")
    return head, h, w, 4 + size


def decode_payload(payload: bytes) -> JournalRecord:
    head, h, w, start = _header(payload)
    labels = np.frombuffer(payload, "<u2", h * w, start).astype(np.uint16).reshape(h, w)
    prov = np.frombuffer(payload, np.uint8, h * w, start + 2 * h * w).copy().reshape(h, w)
    return JournalRecord(str(head["image"]), int(head["y0"]), int(head["x0"]), labels, prov, str(head["state"]),
                         (int(head["image_height"]), int(head["image_width"])))


def scan_journal(data: bytes) -> tuple[list[tuple[int, int, str, str]], int]:
    """([(offset, length, image, state) of every intact record], end of the last intact record).
    A record cut short or failing its CRC (the writer died appending it) ends the journal, and so does
    an intact one we cannot read (a foreign or newer format)."""
    records, pos = [], 0
    while pos + _FRAME.size <= len(data):
        magic, length, crc = _FRAME.unpack_from(data, pos)
        end = pos + _FRAME.size + length
        if magic != _MAGIC or length > _MAX_PAYLOAD or end > len(data):
            break
        payload = data[pos + _FRAME.size:end]
        if zlib.crc32(payload) != crc:
            break
        try:
            head = _header(payload)[0]
            image, state = head["image"], str(head["state"])
            _ = [int(head[key]) for key in ("y0", "x0", "image_height", "image_width")]  # decodable later
        except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError):
            break
        records.append((pos, end - pos, image, state))
        pos = end
    return records, pos


def read_journal(path: Path) -> dict[str, list[JournalRecord]]:
    """Every intact record of the journal file, per image, oldest first; {} when there is none.
    OSError when the file exists but cannot be read."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return {}
    out: dict[str, list[JournalRecord]] = {}
    for offset, length, image, _ in scan_journal(data)[0]:
        out.setdefault(image, []).append(decode_payload(data[offset + FRAME_SIZE:offset + length]))
    return out


# -- a save past its commit point ----------------------------------------------------------------
def read_commit(path: Path) -> dict | None:
    """``commit.json`` as {"entries": {rel: entry}, "renames": [[staged, target], ...], "deletes": [path, ...]};
    None when there is none. ProjectFileError when it exists but is damaged. Accepts the earlier
    one-image form {"image", "entry", "renames"}."""
    path = Path(path)
    try:
        commit = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:
        raise ProjectFileError(f"{path} (an unfinished save) cannot be read ({exc or 'nested too deeply'})") from exc
    try:
        if "entries" not in commit and isinstance(commit.get("image"), str):
            commit = {"entries": {commit["image"]: commit["entry"]}, "renames": commit["renames"]}
        entries = {str(rel): dict(entry) for rel, entry in dict(commit["entries"]).items()}
        renames = [[str(a), str(b)] for a, b in commit["renames"]]
        deletes = [str(d) for d in commit.get("deletes", [])]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProjectFileError(f"{path} (an unfinished save) is damaged ({exc!r})") from exc
    return {"entries": entries, "renames": renames, "deletes": deletes}
