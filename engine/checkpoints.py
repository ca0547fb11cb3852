"""The checkpoint file: one ``.safetensors`` file whose metadata holds the JSON config.

Tensors only — nothing is ever unpickled. Every config field is validated
(``chimera_engine.checkpoint_schema``) and the model it declares is checked against the file's tensors on
the meta device before anything is allocated (``build_to_fit``). The metadata key ``chimera`` holds a JSON object with
``format`` (``"chimera-checkpoint"``), ``format_version``, ``kind`` and everything needed to rebuild
the model with no other input. One file is easy to move, copy and version.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from chimera_engine.atomic import atomic_write_bytes

from chimera_engine.checkpoint_schema import validate_format_version
from chimera_engine.errors import CheckpointError

FORMAT = "chimera-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "chimera"


def write_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write tensors + ``meta`` atomically: a crash or a full disk leaves the old file as it was."""
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, save(tensors, metadata={METADATA_KEY: json.dumps(header)}))
    return Path(path)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON config of a checkpoint, reading the header only."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({exc})") from exc
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file but not a Chimera checkpoint "
                              f"(no '{METADATA_KEY}' metadata); for plain CLIP weights use clip:<arch>/{path}")
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the checkpoint's config is not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise CheckpointError(f"{path}: the checkpoint's config is nested too deeply to be real") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: the checkpoint's config is not a JSON object")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {meta.get('format')!r}")
    validate_format_version(meta.get("format_version"), path, FORMAT_VERSION)
    return meta


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a safetensors file that says it is a Chimera checkpoint (whether its
    config is valid is ``read_metadata``'s question): tells a checkpoint from plain CLIP weights."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return METADATA_KEY in (f.metadata() or {})
    except Exception:  # noqa: BLE001 - any failure to read the header means "not a checkpoint"
        return False


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, config). CheckpointError for a missing, truncated or foreign file."""
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is damaged or truncated ({exc})") from exc
    return tensors, meta


def build_to_fit(build: Callable[[], torch.nn.Module], tensors: dict[str, torch.Tensor],
                 path: str | os.PathLike) -> torch.nn.Module:
    """``build()`` — but first on the meta device, where nothing is allocated, to check that the
    module the config declares has exactly the file's tensors. A crafted config (a CLIP of width
    65536 next to a few KB of tensors) is then a CheckpointError, not an attempt to allocate 51 GB."""
    try:
        with torch.device("meta"):
            shape_only = build()
    except CheckpointError:
        raise
    except (TypeError, ValueError, KeyError, RuntimeError, AttributeError, AssertionError) as exc:
        raise CheckpointError(f"{path}: the model its config describes cannot be built ({exc!r})") from exc
    _check_match(shape_only.state_dict(), tensors, path)
    del shape_only
    return build()


def load_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Load ``tensors`` into ``module`` strictly; a mismatch is a CheckpointError naming the keys."""
    _check_match(module.state_dict(), tensors, path)
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: the tensor {key} holds NaN or infinite values")
    # Stored in a smaller float type (fp16 bundles)? Loading copies into the module's own dtype.
    module.load_state_dict(tensors, strict=True)


def _check_match(own: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        def few(keys):
            return ", ".join(keys[:5]) + (" …" if len(keys) > 5 else "")
        parts = [f"{label}: {few(keys)}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise CheckpointError(f"{path} does not match the model its config describes ({'; '.join(parts)})")


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file (for a training run, give "
                              f"{path / 'model.safetensors'})")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size < 8:
        raise CheckpointError(f"{path} is empty or truncated")
    return path
