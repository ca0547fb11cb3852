"""Fetching CLIP weights with progress and cancel (the app's model dialog, ``chimera-label --download``)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from chimera_engine.errors import ModelNameError
from chimera_engine.model_names import ModelName, parse_model_name


class StopDownload(BaseException):
    """Raised from a progress callback to stop a download. A BaseException on purpose: the hub client
    and ``fetch_weights`` catch ``Exception`` to try other file names, which must not swallow a cancel."""


class Progress:
    """A download progress callback: forwards at most every ``interval`` s (and the last call) and
    raises StopDownload once ``cancel`` is set, which stops the download inside the hub client."""

    def __init__(self, emit: Callable[[int, int], None], cancel: threading.Event, interval: float = 0.05):
        self._emit, self._cancel, self._interval, self._last = emit, cancel, interval, 0.0

    def __call__(self, done: int, total: int) -> None:
        if self._cancel.is_set():
            raise StopDownload()
        now = time.monotonic()
        if now - self._last >= self._interval or (total and done >= total):
            self._last = now
            self._emit(int(done), int(total))


def fetch_clip_weights(model: str, progress: Callable[[int, int], None] | None = None) -> Path:
    """Download the CLIP weights model name ``model`` (``clip:`` or ``chimera:``) needs into the
    Hugging Face cache, or find them there; returns the local file."""
    from chimera_engine import clip_loading  # here: it imports torch and open_clip

    name = parse_model_name(model)
    if name.clip is None:
        raise ModelNameError(f"{model!r} has no CLIP weights to download: give a clip:<arch>/<tag> model")
    return Path(clip_loading.fetch_weights(clip_loading.ClipSpec.parse(name.clip), progress))


def cache_dir() -> Path:
    """The Hugging Face cache that downloads go into (shown to the user)."""
    from chimera_engine.clip_loading import hf_cache_dir  # here: it imports torch and open_clip

    return Path(hf_cache_dir())


def cached_clip_weights(model: ModelName) -> Path | None:
    """The cached weights of a ``clip:``/``chimera:`` model, or None; ChimeraError for an unknown
    architecture or tag. Never touches the network."""
    from chimera_engine.clip_loading import ClipSpec, cached_weights_file

    return cached_weights_file(ClipSpec.parse(model.clip))


HUB_HOST = "huggingface.co"
PROBE_SECONDS = 1.5  # the model dialog must answer at once, not after the hub client's ~45 s of retries
_probe_cache: tuple[float, str | None] | None = None  # (when, answer): one probe per minute at most


def offline_reason(timeout: float = PROBE_SECONDS) -> str | None:
    """Why the Hugging Face hub cannot be reached ("HF_HUB_OFFLINE=1 is set", "no network: ..."),
    or None when it answers. Reads the environment first, then tries one TCP connection to the hub
    on a helper thread that is never waited for longer than ``timeout`` (a DNS lookup can hang
    far longer than a socket timeout covers)."""
    global _probe_cache
    from chimera_engine.clip_loading import is_offline

    if is_offline():
        return "HF_HUB_OFFLINE=1 is set"
    now = time.monotonic()
    if _probe_cache is not None and now - _probe_cache[0] < 60:
        return _probe_cache[1]
    answer: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
            answer.append(None)
        except OSError as exc:
            answer.append(f"no network ({HUB_HOST} cannot be reached: {exc.strerror or exc})")

    worker = threading.Thread(target=probe, name="chimera-hub-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    reason = answer[0] if answer else f"no network ({HUB_HOST} did not answer within {timeout:.1f} s)"
    _probe_cache = (now, reason)
    return reason
