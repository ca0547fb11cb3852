"""A training run's folder: config, metrics log, model checkpoints and the resumable state.

    RUN_DIR/config.json          the resolved TrainConfig
    RUN_DIR/metrics.jsonl        one JSON object per logged iteration (and evaluations)
    RUN_DIR/model.safetensors    the latest model (an engine checkpoint: chimera-label loads it)
    RUN_DIR/iter_000500.safetensors  periodic model checkpoints
    RUN_DIR/train_state.pt       optimizer, schedule, step, RNG: tensors and plain values only,
                                 loaded with torch.load(weights_only=True)
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import torch

from chimera_engine.atomic import atomic_write_bytes, atomic_write_json
from chimera_engine.errors import ChimeraError
from chimera_engine.models import SegmentationModel, save_model

_STATE_KEYS = {"step": int, "optimizer": dict, "scheduler": dict, "scaler": dict, "torch_rng": torch.Tensor}
# The weights of training aids that are not part of the model (TrainConfig.aux_weight): {} without
# them, and in the states saved before there were any.
_AUXILIARY = "auxiliary"


class TrainStateError(ChimeraError):
    """A run's train_state.pt cannot be resumed from (damaged, foreign, or from another config)."""


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.config = self.path / "config.json"
        self.metrics = self.path / "metrics.jsonl"
        self.model = self.path / "model.safetensors"
        self.state = self.path / "train_state.pt"

    def has_state(self) -> bool:
        return self.state.is_file()

    def log(self, record: dict[str, Any]) -> None:
        with self.metrics.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    def save(self, model: SegmentationModel, step: int, resumable: dict[str, Any],
             info: dict[str, Any], keep_copy: bool) -> Path:
        """Model first, then the state that points at it: a crash between the two loses one save.
        ``resumable``: the training step's own state (optimizer, scheduler, scaler, auxiliary)."""
        save_model(model, self.model, info={**info, "iteration": step})
        if keep_copy:
            save_model(model, self.path / f"iter_{step:06d}.safetensors", info={**info, "iteration": step})
        state = {**resumable, "step": step, "torch_rng": torch.get_rng_state()}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.state, buffer.getvalue())
        return self.model

    def load_state(self) -> dict[str, Any]:
        """The resumable state; TrainStateError (saying how to start over) for a damaged file."""
        try:
            state = torch.load(self.state, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - UnpicklingError, EOFError, RuntimeError, ...: all "damaged"
            raise self.damaged(f"it cannot be read ({type(exc).__name__}: {exc})") from exc
        if not isinstance(state, dict):
            raise self.damaged("it does not hold a training state")
        state.setdefault(_AUXILIARY, {})
        if not isinstance(state[_AUXILIARY], dict):
            raise self.damaged(f"its '{_AUXILIARY}' is of the wrong type")
        for key, kind in _STATE_KEYS.items():
            if not isinstance(state.get(key), kind) or (kind is int and isinstance(state[key], bool)):
                raise self.damaged(f"its '{key}' is missing or of the wrong type")
        if state["step"] < 0 or state["torch_rng"].dtype != torch.uint8:
            raise self.damaged("its step or random state is invalid")
        return state

    def damaged(self, why: str) -> TrainStateError:
        return TrainStateError(f"cannot resume the run in {self.path}: {self.state.name} is damaged or foreign "
                               f"({why}); run with --fresh to start over (this replaces the run's checkpoints)")

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.config, config)
