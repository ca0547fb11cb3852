"""What the app asks the engine for, and what comes back: typed, Qt-free records.

Every request says how urgent it is (``priority``: lower runs first) and which queued requests it
makes pointless (``supersedes``): the queue drops those as the new one arrives, which is how "latest
wins" is written down: a newer segment of an image replaces its queued one, a newer image on
screen drops queued work for the images the user has left, a new prefetch list replaces the old.
The engine thread answers with the result records below; the Qt adapter (``chimera_app.worker``)
turns each into one signal.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:  # annotations only: importing them here would import torch and make a cycle
    from chimera_app.service.prelabel import Prelabeler
    from chimera_engine.segmenter import Segmenter

INTERACTIVE, PREFETCH, BATCH = 0, 1, 2  # priorities: what the user waits for, ahead-of-time work, folder jobs


@dataclasses.dataclass(frozen=True)
class Request:
    priority: ClassVar[int] = INTERACTIVE

    def supersedes(self, queued: Request) -> bool:
        """Whether ``queued`` (still waiting) is pointless once this request arrives."""
        return False


# -- what the GUI asks for --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LoadModel(Request):
    """Build a model (downloading its weights if needed); the old one serves until it is ready."""

    name: str
    device: str = "auto"
    precision: str = "auto"

    def supersedes(self, queued: Request) -> bool:
        return isinstance(queued, LoadModel)


@dataclasses.dataclass(frozen=True)
class SetOptions(Request):
    """The unlabeled rule: pixels less likely than ``min_confidence`` stay unlabeled (0 = never)."""

    min_confidence: float

    def supersedes(self, queued: Request) -> bool:
        return isinstance(queued, SetOptions)


@dataclasses.dataclass(frozen=True)
class ShowImage(Request):
    """Decode ``path`` (or take it from the cache) for the screen, then encode it. ``key`` names one
    file for the whole session."""

    key: str
    path: Path

    def supersedes(self, queued: Request) -> bool:
        return (isinstance(queued, (ShowImage, EncodeImage))
                or isinstance(queued, Segment) and queued.key != self.key)


@dataclasses.dataclass(frozen=True)
class Segment(Request):
    """Score image ``key`` for ``prompts``. ``class_ids`` (one per prompt) turns the labels into
    uint16 stable class ids (0 = unlabeled) instead of int32 prompt indices (-1 = unlabeled).

    ``preview``: a quick look while a class name is typed: scored at ``display_size`` (h, w) when
    given (clamped to the image) with one prompt template for names not embedded yet. A preview is
    shown, never stored; only a request that is not a preview gives a full-size, full-ensemble map.
    """

    key: str
    prompts: tuple[str, ...]
    generation: int
    class_ids: tuple[int, ...] | None = None
    preview: bool = False
    display_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.display_size is not None and not self.preview:
            raise ValueError("only a preview is scored at display size: a stored prediction is full size")
        if self.class_ids is not None and len(self.class_ids) != len(self.prompts):
            raise ValueError(f"{len(self.class_ids)} class ids for {len(self.prompts)} prompts")

    def supersedes(self, queued: Request) -> bool:
        return isinstance(queued, Segment) and queued.key == self.key


@dataclasses.dataclass(frozen=True)
class Prefetch(Request):
    """Decode and encode an image the user will probably open next, when nothing more urgent waits."""

    priority: ClassVar[int] = PREFETCH
    key: str
    path: Path

    def supersedes(self, queued: Request) -> bool:
        return isinstance(queued, (Prefetch, EncodeAhead))


# -- follow-ups the engine thread queues itself ------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EncodeImage(Request):
    """Encode the image on screen (after ``ShowImage`` emitted it): its own job, so that moving on
    to another image drops it."""

    key: str


@dataclasses.dataclass(frozen=True)
class EncodeAhead(Request):
    """Start a background encode of a prefetched image."""

    priority: ClassVar[int] = PREFETCH
    key: str


@dataclasses.dataclass(frozen=True)
class StoreFeatures(Request):
    """A background encode finished: put its features into the segmenter's cache (engine thread)."""

    key: str
    future: Future
    segmenter: Segmenter  # the one it was computed with; dropped if another model came meanwhile


@dataclasses.dataclass(frozen=True)
class PrelabelStep(Request):
    """Label the next image of a folder pre-label (one image per job, so user requests wait at most
    one image), then queue the next step."""

    priority: ClassVar[int] = BATCH
    run: Prelabeler


# -- what comes back -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModelLoaded:
    name: str
    device: str  # "CPU fp32", for the status bar
    device_type: str  # "cpu" | "cuda" | "mps"
    precision: str  # "fp32" | "bf16" | "fp16"
    reason: str  # why this device (e.g. why the GPU was not used)
    description: str
    kind: str  # the model's kind (dense CLIP or Chimera-Seg)


@dataclasses.dataclass(frozen=True)
class ImageReady:
    key: str
    rgb: np.ndarray  # H x W x 3 uint8, read-only (shared with the cache)


@dataclasses.dataclass(frozen=True)
class ImageFailed:
    key: str
    message: str


@dataclasses.dataclass(frozen=True)
class Segmented:
    key: str
    generation: int
    labels: np.ndarray  # int32 prompt indices (-1 unlabeled) or uint16 class ids (0 unlabeled)
    confidence: np.ndarray  # float32 in [0, 1], the labels' shape
    preview: bool  # copied from the request: a preview is shown, never stored


@dataclasses.dataclass(frozen=True)
class PrelabelProgress:
    done: int  # images handled (labelled or failed)
    total: int


@dataclasses.dataclass(frozen=True)
class PrelabelResult:
    """One image of a pre-label: its maps, or why it failed (the batch goes on)."""

    key: str
    labels: np.ndarray | None = None  # H x W uint16 class ids (0 = unlabeled), full size
    confidence: np.ndarray | None = None  # H x W float32 in [0, 1]
    error: str | None = None
    kind: str | None = None  # the error's kind (see chimera_app.service.errors)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclasses.dataclass(frozen=True)
class PrelabelSummary:
    total: int
    done: int  # labelled
    failed: tuple[tuple[str, str], ...]  # (key, reason)
    cancelled: bool
    remaining: tuple[str, ...]  # never started (cancelled): resume with exactly these
    error: str | None = None  # why the whole run stopped by itself, if it did

    @property
    def skipped(self) -> int:
        return len(self.remaining)


@dataclasses.dataclass(frozen=True)
class DownloadProgress:
    done: int  # bytes
    total: int  # bytes, 0 = unknown


@dataclasses.dataclass(frozen=True)
class DownloadFinished:
    path: str  # the local weights file


@dataclasses.dataclass(frozen=True)
class DownloadCancelled:
    pass


@dataclasses.dataclass(frozen=True)
class Failed:
    """A request failed; ``kind`` is one of chimera_app.service.errors.KINDS."""

    kind: str
    message: str
