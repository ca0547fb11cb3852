"""Datasets (VOC 2012 aug, COCO-Stuff 164k, shapes) and the ZegCLIP/mmseg augmentation pipeline."""

from chimera_trainer.data.datasets import (
    COCO_STUFF_LAYOUT,
    SHAPES_LAYOUT,
    VOC_LAYOUT,
    DatasetInfo,
    DatasetLayoutError,
    DatasetNameError,
    SegmentationDataset,
    build_dataset,
    coco_stuff_dataset,
    load_info,
    shapes_dataset,
    voc_dataset,
    zero_shot_labels,
)
from chimera_trainer.data.transforms import (
    Compose,
    Normalize,
    Pad,
    PhotoMetricDistortion,
    RandomCrop,
    RandomFlip,
    RandomResize,
    ToTensor,
    eval_pipeline,
    seed_worker,
    train_pipeline,
)

__all__ = [
    "COCO_STUFF_LAYOUT", "SHAPES_LAYOUT", "VOC_LAYOUT", "DatasetInfo", "DatasetLayoutError",
    "DatasetNameError", "SegmentationDataset", "build_dataset", "coco_stuff_dataset", "load_info",
    "shapes_dataset", "voc_dataset", "zero_shot_labels",
    "Compose", "Normalize", "Pad", "PhotoMetricDistortion", "RandomCrop", "RandomFlip", "RandomResize",
    "ToTensor", "eval_pipeline", "seed_worker", "train_pipeline",
]
