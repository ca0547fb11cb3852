"""Model names → what they name. The one parser of model names (torch-free, like open_clip's factory).

Names:
- ``shapes-clip``, ``shapes-chimera`` — the bundled offline models (``resources/models``);
  ``shapes-clip+<method>`` runs the bundled tiny CLIP with another training-free method.
- ``clip:<arch>/<weights>[+<method>]`` — training-free dense CLIP; ``<weights>`` is an open_clip
  pretrained tag (``openai``), ``random``, or a local file (``clip:ViT-B-16//data/w.safetensors``);
  ``<method>`` is one of ``METHODS`` (default ``naclip``).
- ``chimera:<preset>/<arch>/<weights>`` — Chimera-Seg with an untrained body.
- anything else that exists on disk or ends in ``.safetensors`` — a checkpoint written by Chimera.

Every caller (engine, app, CLIs) asks this module; nobody else splits a model name.
"""

from __future__ import annotations

import dataclasses
import os

from chimera_engine.errors import ModelNameError

METHODS = ("naclip", "sclip", "clearclip", "maskclip")
DEFAULT_METHOD = "naclip"
BUNDLED = ("shapes-clip", "shapes-chimera")
RANDOM = "random"
BUNDLED_PREFIX = "bundled:"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")

KINDS = ("bundled", "clip", "chimera", "checkpoint")


def weights_are_local_file(weights: str) -> bool:
    """Whether a CLIP ``<weights>`` part names a file (a path, a weights suffix, a bundled model)."""
    return (weights.startswith(BUNDLED_PREFIX) or weights.lower().endswith(WEIGHT_SUFFIXES)
            or "/" in weights or os.path.sep in weights)


@dataclasses.dataclass(frozen=True)
class ModelName:
    """A parsed model name. ``str()`` gives the canonical spelling."""

    kind: str  # one of KINDS
    arch: str | None = None  # CLIP architecture (clip, chimera)
    weights: str | None = None  # "random", a pretrained tag or a local file (clip, chimera)
    method: str | None = None  # training-free method (clip; bundled shapes-clip when given)
    preset: str | None = None  # body preset (chimera)
    path: str | None = None  # checkpoint file (checkpoint) or bundled model name (bundled)

    @property
    def is_local_file(self) -> bool:
        """Runs without a download: a checkpoint, a bundled model, random or file weights."""
        if self.kind in ("checkpoint", "bundled"):
            return True
        return self.weights == RANDOM or weights_are_local_file(self.weights or "")

    @property
    def needs_download(self) -> bool:
        """Weights named by a pretrained tag (they come through the Hugging Face cache)."""
        return not self.is_local_file

    @property
    def clip(self) -> str | None:
        """``<arch>/<weights>`` (what ``chimera_engine.clip_loading.ClipSpec.parse`` reads)."""
        return f"{self.arch}/{self.weights}" if self.arch else None

    def with_method(self, method: str) -> "ModelName":
        if self.kind != "clip" and not (self.kind == "bundled" and self.path == "shapes-clip"):
            raise ModelNameError(f"{self}: only training-free CLIP models take a method")
        return dataclasses.replace(self, method=_check_method(method))

    def __str__(self) -> str:
        if self.kind == "clip":
            return f"clip:{self.clip}+{self.method}"
        if self.kind == "chimera":
            return f"chimera:{self.preset}/{self.clip}"
        if self.kind == "bundled":
            return self.path + (f"+{self.method}" if self.method else "")
        return str(self.path)


def _check_method(method: str) -> str:
    key = method.strip().lower()
    if key not in METHODS:
        raise ModelNameError(f"unknown training-free method {method!r}; choose one of {', '.join(METHODS)}")
    return key


def _split_method(text: str) -> tuple[str, str | None]:
    """``"ViT-B-16/openai+sclip"`` → (``"ViT-B-16/openai"``, ``"sclip"``); a ``+`` inside a file path
    is left alone unless what follows it is a method name."""
    head, sep, tail = text.rpartition("+")
    if not sep or "/" in tail or os.path.sep in tail or "." in tail:
        return text, None
    return head, _check_method(tail)


def _split_clip(text: str, name: str) -> tuple[str, str]:
    arch, sep, weights = text.partition("/")
    if not arch or not sep or not weights:
        raise ModelNameError(f"cannot read {name!r}: expected <arch>/<tag>, <arch>/random or "
                             "<arch>/<path to weights file> (e.g. clip:ViT-B-16/openai)")
    return arch, weights


def parse_model_name(text: str) -> ModelName:
    """Read any model name of this module's docstring (``ModelNameError`` when it names nothing)."""
    name = str(text).strip()
    if not name:
        raise ModelNameError("no model name given")
    if name.startswith("clip:"):
        spec, method = _split_method(name[5:])
        arch, weights = _split_clip(spec, name)
        return ModelName("clip", arch=arch, weights=weights, method=method or DEFAULT_METHOD)
    if name.startswith("chimera:"):
        preset, sep, spec = name[8:].partition("/")
        if not preset or not sep:
            raise ModelNameError(f"{name!r}: expected chimera:<preset>/<clip arch>/<clip weights>")
        arch, weights = _split_clip(spec, name)
        return ModelName("chimera", arch=arch, weights=weights, preset=preset)
    base, method = _split_method(name)
    if base in BUNDLED:
        if method and base != "shapes-clip":
            raise ModelNameError(f"{name!r}: only training-free CLIP models take a method")
        return ModelName("bundled", path=base, method=method)
    if os.path.exists(os.path.expanduser(name)) or name.endswith(".safetensors"):
        return ModelName("checkpoint", path=os.path.expanduser(name))
    raise ModelNameError(f"unknown model {name!r}: use {', '.join(BUNDLED)}, clip:<arch>/<tag>[+method] "
                         f"(methods: {', '.join(METHODS)}), chimera:<preset>/<arch>/<tag>, or a checkpoint path")
