"""A project's fine-tuned model versions: numbered files that are never overwritten, and an index.

Layout (inside the project's data folder, e.g. ``IMAGES/.chimera/models/``)::

    index.json        {"format": "chimera-model-versions", "version": 1,
                       "active": "v2",          # the version the project uses; null = none of them
                                                # (the project's own model choice in project.json)
                       "versions": [{"name": "v1", "file": "v1.safetensors", "metrics": "v1.json",
                                     "created": "2026-12-02T01:00:00+00:00", "base": "shapes-chimera",
                                     "alpha": 0.5, "train_images": 16, "held_out_images": 4,
                                     "held_out": {"mIoU_before": 0.41, "mIoU_after": 0.63,
                                                  "pixels_to_change_before": 1200.5,
                                                  "pixels_to_change_after": 610.0}}, ...]}
    index.lock        held with an OS lock while index.json is read, changed and written back
    v1.safetensors    an engine checkpoint (``chimera-label --model`` and the app load it as it is);
                      its metadata ``info.finetune`` holds base, data summary, blend factor, metrics
    v1.json           the full metrics of that fine-tune (per-class IoU before/after, the α grid)

A version's files are written completely (atomic renames) before the index names it, so a kill at
any moment leaves the index, and the active version, as they were; version numbers only grow, and a
name whose files exist is never reused. ``index.json`` is written atomically; writers (this module
and the app, when it switches or rolls back) take ``index.lock`` around their read-modify-write.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chimera_engine.atomic import atomic_write_json
from chimera_engine.errors import ChimeraError

INDEX_FORMAT, INDEX_VERSION = "chimera-model-versions", 1
MODELS_DIR_NAME = "models"
# The fewest human-verified images a fine-tune accepts: at least one held out to measure the
# result and two to learn from. ``chimera-train finetune`` refuses below it (its --min-images
# default) and the app checks it before starting the trainer; both import it from here (the app
# never imports the trainer).
MIN_VERIFIED_IMAGES = 3
_NAME = re.compile(r"^v(\d+)$")


class VersionIndexError(ChimeraError):
    """The project's model index is damaged or names a version that does not exist."""


def models_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / MODELS_DIR_NAME


def empty_index() -> dict[str, Any]:
    return {"format": INDEX_FORMAT, "version": INDEX_VERSION, "active": None, "versions": []}


def read_index(directory: str | Path) -> dict[str, Any]:
    """The index of ``directory`` (a project's models folder); an empty one when there is none."""
    path = Path(directory) / "index.json"
    if not path.exists():
        return empty_index()
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise VersionIndexError(f"cannot read the model index {path}: {exc}") from exc
    if (not isinstance(index, dict) or index.get("format") != INDEX_FORMAT
            or not isinstance(index.get("versions"), list)):
        raise VersionIndexError(f"{path} is not a Chimera model index")
    if not isinstance(index.get("version"), int) or index["version"] > INDEX_VERSION:
        raise VersionIndexError(f"{path} was written by a newer Chimera (index version {index.get('version')})")
    return index


def active_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint file of the active version, or None when no version is active."""
    index = read_index(directory)
    name = index.get("active")
    if name is None:
        return None
    for entry in index["versions"]:
        if entry.get("name") == name:
            return Path(directory) / entry["file"]
    raise VersionIndexError(f"the model index names '{name}' as active, but lists no such version")


@contextlib.contextmanager
def locked_index(directory: str | Path):
    """Hold ``index.lock`` (an OS lock, blocking) while the caller reads and rewrites the index."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "index.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            import fcntl
        except ImportError:  # Windows: renames are still atomic; concurrent writers are not serialised
            fcntl = None
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield directory
    finally:
        os.close(fd)  # closing releases the lock


def _next_number(directory: Path, index: dict[str, Any]) -> int:
    """One past every version the index lists and every vN.* file on disk (even orphans of a kill)."""
    numbers = [0]
    for entry in index["versions"]:
        match = _NAME.match(str(entry.get("name", "")))
        numbers.append(int(match.group(1)) if match else 0)
    for path in directory.glob("v*.*"):
        match = _NAME.match(path.name.split(".", 1)[0])
        if match:
            numbers.append(int(match.group(1)))
    return max(numbers) + 1


def add_version(directory: str | Path, write: Callable[[str, Path, Path], dict[str, Any]],
                activate: bool = False) -> dict[str, Any]:
    """Reserve the next version name, let ``write(name, checkpoint_path, metrics_path)`` write its
    files (and return its index entry fields), then list it in the index (and make it active when
    ``activate``). Returns the new entry. Nothing is listed if ``write`` raises."""
    with locked_index(directory) as directory:
        index = read_index(directory)
        name = f"v{_next_number(directory, index)}"
        checkpoint, metrics = directory / f"{name}.safetensors", directory / f"{name}.json"
        fields = write(name, checkpoint, metrics)
        entry = {"name": name, "file": checkpoint.name, "metrics": metrics.name,
                 "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **fields}
        index["versions"].append(entry)
        if activate:
            index["active"] = name
        atomic_write_json(directory / "index.json", index)
        return entry


def set_active(directory: str | Path, name: str | None) -> dict[str, Any]:
    """Make version ``name`` active (None: no version; the project's own model choice)."""
    with locked_index(directory) as directory:
        index = read_index(directory)
        if name is not None and not any(e.get("name") == name for e in index["versions"]):
            known = ", ".join(e.get("name", "?") for e in index["versions"]) or "none"
            raise VersionIndexError(f"no model version '{name}' in this project (versions: {known})")
        index["active"] = name
        atomic_write_json(directory / "index.json", index)
        return index
