"""The project's fine-tuned model versions as the app shows and switches them, Qt-free.

The index itself (``models/index.json``, its lock, the file layout) is read and written only by
``chimera_engine.formats.model_versions``, the one implementation ``chimera-train finetune`` uses too.
What this module adds is the app's rule for it: **the index's ``active`` names the version the app
uses**, or null when it uses any other model (then ``project.json``'s model is the project's own
choice, the "base model" a rollback returns to). So:

- opening a project loads the active version's checkpoint when there is one, else project.json's model;
- once the engine has loaded a model, ``record_in_use`` writes ``active`` (under the index lock) to
  match: the version when the model is one of the project's versions, null otherwise; project.json's
  model is only ever set to models that are not versions, so the base is never lost;
- switching and rolling back are therefore just loading a model: the record follows the load, and
  a checkpoint that fails to load changes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from pathlib import Path
from typing import Any

from chimera_engine.formats.model_versions import active_checkpoint, models_dir, read_index, set_active

__all__ = ["ModelVersion", "compare_rows", "list_versions", "model_at_open", "record_in_use", "version_of"]


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    name: str  # "v3"
    checkpoint: Path
    created: datetime.datetime | None  # aware, UTC as written
    alpha: float | None
    base: str
    train_images: int | None
    held_out_images: int | None
    held_out: dict[str, Any]  # mIoU_before/after (0..1), pixels_to_change_before/after (per image)

    @classmethod
    def from_entry(cls, directory: Path, entry: dict[str, Any]) -> ModelVersion:
        try:
            created = datetime.datetime.fromisoformat(str(entry.get("created")))
        except ValueError:
            created = None
        alpha = entry.get("alpha")
        return cls(str(entry["name"]), directory / str(entry["file"]), created,
                   None if alpha is None else float(alpha), str(entry.get("base", "")), entry.get("train_images"),
                   entry.get("held_out_images"), dict(entry.get("held_out") or {}))

    def date_text(self) -> str:
        """Local date and time, e.g. '2026-12-02 14:05'; '' when unknown."""
        if self.created is None:
            return ""
        created = self.created if self.created.tzinfo else self.created.replace(tzinfo=datetime.timezone.utc)
        return created.astimezone().strftime("%Y-%m-%d %H:%M")

    def metrics_text(self) -> str:
        """'held-out mIoU 36.1 → 41.0 %, pixels to change 1,542 → 1,143 per image, α 0.75'."""
        h = self.held_out
        parts = []
        if h.get("mIoU_before") is not None and h.get("mIoU_after") is not None:
            parts.append(f"held-out mIoU {_pct(h['mIoU_before'])} → {_pct(h['mIoU_after'])} %")
        if h.get("pixels_to_change_before") is not None and h.get("pixels_to_change_after") is not None:
            parts.append(f"pixels to change {h['pixels_to_change_before']:,.0f} → "
                         f"{h['pixels_to_change_after']:,.0f} per image")
        if self.alpha is not None:
            parts.append(f"α {self.alpha:g}")
        return ", ".join(parts)

    def base_text(self) -> str:
        """The model it was fine-tuned from, short: 'shapes-chimera', 'v1' (an earlier version of
        this project), 'model.safetensors' (any other checkpoint, by its file name); '' unknown."""
        if not self.base.endswith(".safetensors"):
            return self.base
        path = Path(self.base)
        if re.fullmatch(r"v\d+", path.stem) and path.parent.name == "models":
            return path.stem
        return path.name

    def label(self) -> str:
        """The model menu's entry: name, the model it came from, date and held-out metrics
        ('v2 · from v1 · 2026-12-02 14:05 · held-out mIoU …'): the numbers compare it with that
        model, which need not be the project's base model any more."""
        base = self.base_text()
        return " · ".join(p for p in (self.name, f"from {base}" if base else "", self.date_text(),
                                      self.metrics_text()) if p)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}"


def list_versions(data_dir: str | Path) -> tuple[list[ModelVersion], str | None]:
    """The project's versions in the order they were made, and the active one's name (None: the
    project's own model). Raises ``VersionIndexError`` for a damaged index."""
    directory = models_dir(data_dir)
    index = read_index(directory)
    return [ModelVersion.from_entry(directory, e) for e in index["versions"]], index.get("active")


def version_of(data_dir: str | Path, model: str | None) -> str | None:
    """The name of the project's version whose checkpoint ``model`` (a model name) is, else None."""
    if not model or not model.endswith(".safetensors"):
        return None
    directory = models_dir(data_dir)
    if not (directory / "index.json").is_file():
        return None
    try:
        target = Path(model).expanduser().resolve()
    except (OSError, RuntimeError):
        return None
    versions, _ = list_versions(data_dir)
    return next((v.name for v in versions if v.checkpoint.resolve() == target), None)


def model_at_open(data_dir: str | Path, project_model: str | None) -> str | None:
    """What to load when the project opens: the active version's checkpoint, else project.json's
    model (None: neither). Raises ``VersionIndexError`` for a damaged index or a missing version."""
    active = active_checkpoint(models_dir(data_dir))
    return project_model if active is None else str(active)


def record_in_use(data_dir: str | Path, model: str) -> str | None:
    """After the engine loaded ``model``: make the index's ``active`` say so (the version, or null
    for any other model), under the index lock, writing only when it changes. Returns the version
    name, or None when ``model`` is not one of the project's versions."""
    name = version_of(data_dir, model)
    directory = models_dir(data_dir)
    if (directory / "index.json").is_file() and read_index(directory).get("active") != name:
        set_active(directory, name)
    return name


def compare_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(what, before, after) rows of a fine-tune's held-out measurement, for people: mIoU, the
    pixels a person would change per image, then each class's IoU."""
    before, after = result.get("before", {}), result.get("after", {})
    rows = [("mIoU (%)", _pct(before.get("mIoU")), _pct(after.get("mIoU")))]
    ptc_b, ptc_a = before.get("pixels_to_change_per_image"), after.get("pixels_to_change_per_image")
    rows.append(("pixels to change per image", "–" if ptc_b is None else f"{ptc_b:,.0f}",
                 "–" if ptc_a is None else f"{ptc_a:,.0f}"))
    per_b, per_a = before.get("per_class_iou", {}), after.get("per_class_iou", {})
    for name in result.get("classes", []):
        rows.append((f"IoU {name} (%)", _pct(per_b.get(name)), _pct(per_a.get(name))))
    return rows
