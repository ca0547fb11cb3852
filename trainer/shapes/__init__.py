"""The shapes world: generated images of coloured shapes with masks and captions (see world.py)."""

from chimera_trainer.shapes.world import BACKGROUND, SHAPE_CLASSES, SPLIT, Sample, render_sample, sample, write_dataset

__all__ = ["BACKGROUND", "SHAPE_CLASSES", "SPLIT", "Sample", "render_sample", "sample", "write_dataset"]
