"""Chimera-Seg: the DeepLabV3+ body, the CLIP Semantic Head, and the model that joins them."""

from engine.chimera.body import BodyConfig, DeepLabV3PlusBody
from engine.chimera.model import PRESETS, ChimeraConfig, ChimeraSeg

__all__ = ["BodyConfig", "DeepLabV3PlusBody", "PRESETS", "ChimeraConfig", "ChimeraSeg"]
