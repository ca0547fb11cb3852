"""Chimera-Seg: the DeepLabV3+ body, the CLIP Semantic Head, and the model that joins them."""

from chimera_engine.chimera.body import BodyConfig, DeepLabV3PlusBody
from chimera_engine.chimera.model import PRESETS, ChimeraConfig, ChimeraSeg

__all__ = ["BodyConfig", "DeepLabV3PlusBody", "PRESETS", "ChimeraConfig", "ChimeraSeg"]
