"""The dataset report of a project (File → Report): where the labelling stands. Qt-free.

Per class: pixels (and how many of them a person decided), images it appears in, the model's
mean confidence on the pixels it predicted for it. Per folder: images never touched, and the
count of each state (verified, in progress, predicted, unlabeled). ``to_markdown`` writes it
for a README or an issue; the report window draws the same numbers.

Label maps are read one image at a time (the project's saved files), so memory stays at one
image whatever the folder size; an image whose saved labels cannot be read is counted, named
and skipped, never a reason to fail the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from chimera_app.project.document import ImageState, LabelDocument, Provenance
from chimera_engine.errors import ChimeraError

__all__ = ["ClassStats", "DatasetReport", "build_report"]

STATE_ORDER = (ImageState.VERIFIED, ImageState.IN_PROGRESS, ImageState.PREDICTED, ImageState.UNLABELED)
STATE_TEXT = {ImageState.VERIFIED: "verified", ImageState.IN_PROGRESS: "in progress",
              ImageState.PREDICTED: "predicted", ImageState.UNLABELED: "unlabeled"}


@dataclass
class ClassStats:
    id: int
    name: str
    color: tuple[int, int, int]
    pixels: int = 0
    human_pixels: int = 0  # decided (painted or accepted) by a person
    images: int = 0
    _confidence_sum: float = 0.0
    _confidence_pixels: int = 0

    @property
    def mean_confidence(self) -> float | None:
        """The model's mean confidence over the pixels it decided for this class (None: none)."""
        return self._confidence_sum / self._confidence_pixels if self._confidence_pixels else None


@dataclass
class DatasetReport:
    images: int
    states: dict[ImageState, int]
    classes: list[ClassStats]
    never_touched: list[str]  # no label anywhere: neither predicted nor painted
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (image, why its labels were skipped)

    @property
    def labelled_pixels(self) -> int:
        return sum(c.pixels for c in self.classes)

    def to_markdown(self, title: str = "Dataset report") -> str:
        lines = [f"# {title}", "", f"{self.images} images: "
                 + ", ".join(f"{self.states.get(s, 0)} {STATE_TEXT[s]}" for s in STATE_ORDER) + ".", ""]
        lines += ["| class | id | pixels | share | by a person | images | mean confidence |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        total = max(self.labelled_pixels, 1)
        for c in self.classes:
            conf = "–" if c.mean_confidence is None else f"{c.mean_confidence:.0%}"
            human = f"{c.human_pixels / c.pixels:.0%}" if c.pixels else "–"
            lines.append(f"| {c.name} | {c.id} | {c.pixels:,} | {c.pixels / total:.1%} | {human} | "
                         f"{c.images} | {conf} |")
        lines += ["", f"## Images never touched ({len(self.never_touched)})", ""]
        shown = self.never_touched[:50]
        lines += [f"- {rel}" for rel in shown] or ["none"]
        if len(self.never_touched) > len(shown):
            lines.append(f"- … and {len(self.never_touched) - len(shown)} more")
        if self.unreadable:
            lines += ["", f"## Skipped: saved labels unreadable ({len(self.unreadable)})", ""]
            lines += [f"- {rel}: {why}" for rel, why in self.unreadable]
        return "\n".join(lines) + "\n"


def build_report(project, progress: Callable[[int, int], None] | None = None) -> DatasetReport:
    """Count ``project``'s labels (an open ``Project``: ``images()``, ``state(rel)``,
    ``classes``, ``load_document(rel)``). ``progress(done, total)`` after each image."""
    rels = project.images()
    stats = {c.id: ClassStats(c.id, c.name, tuple(c.color)) for c in project.classes}
    states = dict.fromkeys(STATE_ORDER, 0)
    never, unreadable = [], []
    top = max(stats, default=0)
    for i, rel in enumerate(rels):
        state = ImageState(project.state(rel))
        states[state] = states.get(state, 0) + 1
        try:
            doc = project.load_document(rel) if state != ImageState.UNLABELED else None
        except (ChimeraError, OSError, ValueError) as exc:
            unreadable.append((rel, str(exc)))
        else:
            if doc is None or not doc.labels.any():
                never.append(rel)
            else:
                _count(doc, stats, top)
        if progress is not None:
            progress(i + 1, len(rels))
    ordered = [stats[c.id] for c in project.classes]
    return DatasetReport(len(rels), states, ordered, never, unreadable)


def _count(doc: LabelDocument, stats: dict[int, ClassStats], top: int) -> None:
    labels = doc.labels
    if top == 0:
        return
    clipped = np.where(labels <= top, labels, 0)  # ids of deleted classes are not reported
    pixels = np.bincount(clipped.ravel(), minlength=top + 1)
    human = np.bincount(clipped[doc.provenance == Provenance.HUMAN], minlength=top + 1)
    model_mask = doc.provenance == Provenance.MODEL
    if doc.confidence is not None and model_mask.any():
        conf_sum = np.bincount(clipped[model_mask], weights=doc.confidence[model_mask], minlength=top + 1)
        conf_n = np.bincount(clipped[model_mask], minlength=top + 1)
    else:
        conf_sum = conf_n = None
    for class_id, s in stats.items():
        n = int(pixels[class_id])
        if n:
            s.pixels += n
            s.images += 1
            s.human_pixels += int(human[class_id])
        if conf_n is not None and conf_n[class_id]:
            s._confidence_sum += float(conf_sum[class_id])
            s._confidence_pixels += int(conf_n[class_id])
