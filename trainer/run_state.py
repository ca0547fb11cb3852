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

from engine.atomic import atomic_write_bytes, atomic_write_json
from engine.models import SegmentationModel, save_model


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

    def save(self, model: SegmentationModel, step: int, optimizer, scheduler, scaler,
             info: dict[str, Any], keep_copy: bool) -> Path:
        """Model first, then the state that points at it: a crash between the two loses one save."""
        save_model(model, self.model, info={**info, "iteration": step})
        if keep_copy:
            save_model(model, self.path / f"iter_{step:06d}.safetensors", info={**info, "iteration": step})
        state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict() if scaler is not None else {},
                 "torch_rng": torch.get_rng_state()}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.state, buffer.getvalue())
        return self.model

    def load_state(self) -> dict[str, Any]:
        return torch.load(self.state, map_location="cpu", weights_only=True)

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.config, config)
