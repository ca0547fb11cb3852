"""Build an open_clip CLIP model from ``<arch>/<weights>``: a pretrained tag, a local file, or random.

Weights for a tag come through the Hugging Face cache. We look in the cache first and only then
download, because the hub client spends ~45 s in retries before it admits that a machine is offline;
with ``HF_HUB_OFFLINE=1`` (or ``offline=True``) a missing file fails at once with a message that
says how to get it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import open_clip
import torch

from chimera_engine.errors import ModelNameError, WeightsNotFoundError

ProgressCallback = Callable[[int, int], None]
"""Called with (bytes done, bytes total) while weights download; total is 0 when unknown."""

RANDOM = "random"
BUNDLED_PREFIX = "bundled:"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """Which CLIP to build: an open_clip architecture and where its weights come from.

    ``weights`` is ``"random"``, an open_clip pretrained tag (``"openai"``), or a local file path.
    """

    arch: str
    weights: str = RANDOM

    @classmethod
    def parse(cls, text: str) -> "ClipSpec":
        """``"ViT-B-16/openai"``, ``"ViT-B-16/random"`` or ``"ViT-B-16//abs/path/w.safetensors"``."""
        arch, sep, weights = text.partition("/")
        if not arch or not sep or not weights:
            raise ModelNameError(
                f"cannot read CLIP spec {text!r}: expected <arch>/<tag>, <arch>/random or "
                "<arch>/<path to weights file> (e.g. ViT-B-16/openai)")
        return cls(arch, weights)

    @property
    def is_file(self) -> bool:
        return (self.weights.startswith(BUNDLED_PREFIX) or self.weights.lower().endswith(WEIGHT_SUFFIXES)
                or os.path.sep in self.weights)

    def weights_path(self) -> Path:
        """The local file of file-based weights (``bundled:<name>`` → ``resources/models/<name>``)."""
        if self.weights.startswith(BUNDLED_PREFIX):
            return bundled_model_path(self.weights[len(BUNDLED_PREFIX):])
        return Path(self.weights).expanduser()

    def __str__(self) -> str:
        return f"{self.arch}/{self.weights}"


def bundled_model_path(name: str) -> Path:
    """A model shipped in ``resources/models`` (the shapes-world models)."""
    from chimera_engine.errors import ModelNameError

    path = resources.files("chimera_resources") / "models" / f"{name}.safetensors"
    if not path.is_file():
        raise ModelNameError(f"the bundled model {name!r} is not in this installation (expected {path}); "
                             "`chimera-train bundle` builds it (see README)")
    return Path(str(path))


def register_bundled_configs() -> None:
    """Make the architectures in ``resources/clip_configs`` (tiny test/shapes CLIPs) known to open_clip."""
    if getattr(register_bundled_configs, "done", False):
        return
    configs = resources.files("chimera_resources") / "clip_configs"
    with resources.as_file(configs) as folder:
        open_clip.add_model_config(Path(folder))
    register_bundled_configs.done = True


def model_config(arch: str) -> dict:
    """The open_clip config dict of ``arch``; ModelNameError listing known ones when unknown."""
    register_bundled_configs()
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        vits = [m for m in open_clip.list_models() if "ViT" in m or m.startswith("chimera")]
        raise ModelNameError(f"unknown CLIP architecture {arch!r}; known ViTs: {', '.join(vits)}")
    return cfg


def hf_cache_dir() -> Path:
    """Where downloaded weights live (``HF_HUB_CACHE`` / ``HF_HOME`` are honoured)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def is_offline(offline: bool | None = None) -> bool:
    if offline is not None:
        return offline
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_location(spec: ClipSpec) -> tuple[str, str, dict]:
    cfg = open_clip.get_pretrained_cfg(spec.arch, spec.weights)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(spec.arch)
        raise WeightsNotFoundError(
            f"{spec.weights!r} is not a pretrained tag of {spec.arch} "
            f"(known tags: {', '.join(tags) or 'none'}); give a tag, 'random', or a weights file path")
    hub = cfg.get("hf_hub", "")
    if not hub:
        raise WeightsNotFoundError(
            f"weights of {spec} are not on the Hugging Face hub; download them yourself "
            f"({cfg.get('url', 'no url known')}) and use clip:{spec.arch}/<path to file>")
    repo_id, filename = os.path.split(hub)
    return repo_id, filename or "open_clip_pytorch_model.bin", cfg


def _candidate_filenames(filename: str) -> list[str]:
    stem, _ = os.path.splitext(filename)
    return [stem + ".safetensors", filename] if not filename.endswith(".safetensors") else [filename]


def cached_weights_file(spec: ClipSpec) -> Path | None:
    """The cached weights file of a tag, or None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    repo_id, filename, _ = _hub_location(spec)
    for name in _candidate_filenames(filename):
        hit = try_to_load_from_cache(repo_id, name)
        if isinstance(hit, str):
            return Path(hit)
    return None


def _progress_tqdm(callback: ProgressCallback):
    from tqdm.auto import tqdm

    class CallbackTqdm(tqdm):
        done = 0  # own count: a disabled bar (HF_HUB_DISABLE_PROGRESS_BARS) does not keep ``n``

        def update(self, n=1):
            out = super().update(n)
            self.done += n or 0
            callback(int(self.done), int(self.total or 0))
            return out

    return CallbackTqdm


def fetch_weights(spec: ClipSpec, progress: ProgressCallback | None = None,
                  offline: bool | None = None) -> Path:
    """Return a local weights file for ``spec``: the file itself, the cached copy, or a download."""
    if spec.is_file:
        path = spec.weights_path()
        if not path.is_file():
            raise WeightsNotFoundError(f"CLIP weights file not found: {path}")
        return path
    hit = cached_weights_file(spec)
    if hit is not None:
        return hit
    repo_id, filename, _ = _hub_location(spec)
    how = (f"Download them on a machine with internet access (e.g. `chimera-label --download clip:{spec}`), "
           f"which stores them in the Hugging Face cache ({hf_cache_dir()}), or point to a local file with "
           f"clip:{spec.arch}/<path to .safetensors/.bin/.pt>.")
    if is_offline(offline):
        raise WeightsNotFoundError(f"weights of clip:{spec} are not in the cache and this machine is offline "
                                   f"(HF_HUB_OFFLINE=1). {how}")
    from huggingface_hub import hf_hub_download

    tqdm_class = _progress_tqdm(progress) if progress else None
    errors = []
    for name in _candidate_filenames(filename):
        try:
            return Path(hf_hub_download(repo_id, name, tqdm_class=tqdm_class, library_name="chimera"))
        except Exception as exc:  # the hub raises many types; all mean "not from here"
            errors.append(f"{name}: {exc}")
    raise WeightsNotFoundError(f"could not download weights of clip:{spec} from {repo_id} "
                               f"({'; '.join(errors)}). {how}")


def create_clip(spec: ClipSpec, progress: ProgressCallback | None = None,
                offline: bool | None = None) -> open_clip.CLIP:
    """Build the CLIP of ``spec`` in eval mode on the CPU with fp32 weights.

    Weights files are read by us, never handed to a loader that might unpickle: ``.safetensors``
    as tensors only, ``.bin/.pt/.pth`` with ``torch.load(weights_only=True)`` and no fallback.
    A file that is not what its name says is a WeightsNotFoundError.
    """
    cfg = model_config(spec.arch)
    if spec.weights == RANDOM:
        with _quiet_open_clip():  # it logs a warning for random weights, which here are intended
            model = open_clip.create_model(spec.arch, pretrained=None)
    elif spec.is_file and _is_chimera_checkpoint(spec.weights_path()):
        model = _clip_from_checkpoint(spec.weights_path())
    else:
        path = fetch_weights(spec, progress, offline)
        quick_gelu = False if spec.is_file else bool(
            open_clip.get_pretrained_cfg(spec.arch, spec.weights).get("quick_gelu", False))
        state_dict = read_weights_file(path)
        try:
            with _quiet_open_clip():
                model = open_clip.create_model(spec.arch, pretrained=None,
                                               force_quick_gelu=quick_gelu or cfg.get("quick_gelu", False))
            _load_open_clip_state(model, state_dict)
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
            raise WeightsNotFoundError(f"cannot load CLIP weights {path} into {spec.arch}: {exc}") from exc
    return model.eval()


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file; WeightsNotFoundError for anything that is not one."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ...: all mean "not weights"
            raise WeightsNotFoundError(f"{path} is not a readable .safetensors weights file ({exc})") from exc
    try:
        # weights_only: tensors and plain containers, never arbitrary objects; no unsafe retry.
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, ...
        raise WeightsNotFoundError(f"{path} is not a readable weights file, or holds more than tensors "
                                   f"(Chimera loads only tensors from it): {exc}") from exc
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not loaded or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()):
        raise WeightsNotFoundError(f"{path} does not hold a CLIP state dict (a mapping of names to tensors)")
    if next(iter(loaded)).startswith("module."):  # saved from DistributedDataParallel
        loaded = {k[7:]: v for k, v in loaded.items()}
    return loaded


def _load_open_clip_state(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """open_clip's own conversions of a loaded state dict (as its load_checkpoint does), then a strict load."""
    from open_clip import factory

    state_dict = factory.convert_state_dict(model, state_dict)
    if "positional_embedding" in state_dict and not hasattr(model, "positional_embedding"):
        state_dict = factory.convert_to_custom_text_state_dict(state_dict)
    for key in ("logit_scale", "logit_bias"):
        own = getattr(model, key, None)
        if key in state_dict and own is not None and own.ndim != state_dict[key].ndim:
            state_dict[key] = state_dict[key].reshape(own.shape)
    if "logit_bias" not in state_dict and getattr(model, "logit_bias", None) is not None:
        state_dict["logit_bias"] = torch.zeros_like(state_dict["logit_scale"])
    state_dict.pop("text.transformer.embeddings.position_ids", None)
    factory.resize_pos_embed(state_dict, model)
    factory.resize_text_pos_embed(state_dict, model)
    model.load_state_dict(state_dict, strict=True)


def _is_chimera_checkpoint(path: Path) -> bool:
    if path.suffix != ".safetensors":
        return False
    from chimera_engine.checkpoints import is_checkpoint

    return is_checkpoint(path)


def _clip_from_checkpoint(path: Path) -> open_clip.CLIP:
    """The CLIP embedded in a Chimera checkpoint (e.g. the bundled shapes-clip)."""
    from chimera_engine.checkpoints import read_checkpoint
    from chimera_engine.errors import CheckpointError

    tensors, meta = read_checkpoint(path)
    clip_meta = meta.get("clip")
    if not isinstance(clip_meta, dict) or clip_meta.get("embedded") is not True:
        raise CheckpointError(f"{path} does not embed its CLIP weights")
    return clip_from_stored(clip_meta.get("model_cfg"), {k[5:]: v for k, v in tensors.items()
                                                          if k.startswith("clip.")}, path)


def clip_from_stored(model_cfg: dict, tensors: dict[str, torch.Tensor], path) -> open_clip.CLIP:
    """The CLIP a checkpoint stores: its config validated, checked against ``tensors`` on the meta
    device (nothing allocated), then built and loaded. CheckpointError when any step fails."""
    from chimera_engine.checkpoint_schema import validate_clip_config
    from chimera_engine.checkpoints import build_to_fit, load_state

    validate_clip_config(model_cfg, path)
    shape_only = _meta_buildable(model_cfg)
    build_to_fit(shape_only, tensors, path)  # the real build below is open_clip's own factory
    model = clip_from_config(model_cfg)
    load_state(model, tensors, path)
    return model.eval()


def _meta_buildable(model_cfg: dict) -> Callable[[], torch.nn.Module]:
    """A builder of the CLIP class a config describes (open_clip's factory also moves it to a
    device, which the meta device refuses); parameter names and shapes are the factory's."""
    def build() -> torch.nn.Module:
        cfg = json.loads(json.dumps(model_cfg))
        quick_gelu = bool(cfg.pop("quick_gelu", False))
        model_class = open_clip.CustomTextCLIP if cfg.pop("custom_text", False) else open_clip.CLIP
        with _quiet_open_clip():
            return model_class(**cfg, quick_gelu=quick_gelu)
    return build


def clip_from_config(model_cfg: dict) -> open_clip.CLIP:
    """Rebuild a CLIP (random weights) from a stored open_clip config dict, e.g. from a checkpoint."""
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
        with _quiet_open_clip():
            model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    return model.eval()


@contextlib.contextmanager
def _quiet_open_clip():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def clip_preprocess(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) that ``model`` was trained with."""
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    mean = tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD))
    return mean, std
