"""The training data stream: deterministic, resumable, and the same for 1 or N processes.

The stream is a sequence of global positions 0, 1, 2, ...; position ``g`` is image
``perm_e[g mod n]`` of epoch ``e = g div n`` (a permutation seeded by (seed, e)), augmented with a
generator seeded by (seed, g). Process ``r`` of ``W`` takes the positions ``g ≡ r (mod W)``, so a
global batch is the same set of augmented crops however many processes share it, and a resumed run
continues at the exact next position.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from chimera_engine.images import load_image
from chimera_trainer.data.datasets import DatasetInfo, zero_shot_labels
from chimera_trainer.data.transforms import train_pipeline


class ResumableSampler(Sampler):
    """Endless ``(image index, augmentation seed)`` keys for one process, from global ``start``."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0):
        if size < 1:
            raise ValueError("the training set is empty")
        if start % world_size:
            raise ValueError("the start position must be a multiple of the number of processes")
        self.size, self.seed, self.rank, self.world_size, self.start = size, seed, rank, world_size, start

    def __iter__(self):
        position = self.start + self.rank
        epoch, perm = -1, None
        while True:
            e, offset = divmod(position, self.size)
            if e != epoch:
                epoch, perm = e, np.random.default_rng([self.seed, e]).permutation(self.size)
            yield int(perm[offset]), (self.seed, position)
            position += self.world_size

    def __len__(self):  # endless; DataLoader only needs a number
        return 2 ** 62


class ZeroShotTrainSet(Dataset):
    """Wraps a dataset: seen-only labels (unseen → ignore) and the augmentation of PAPER.md §5.
    With ``twins`` (a list of twin image paths per item) an item also holds its twins, ``K x 3 x H x
    W``, each augmented exactly as the image: the pipeline's draws depend on the seed and the label
    only, never on the pixels."""

    def __init__(self, base: Dataset, info: DatasetInfo, crop_size: int, mean, std,
                 scale=(2048, 512), ratio_range=(0.5, 2.0), twins: list | None = None):
        self.base, self.info, self.twins = base, info, twins
        # The pipeline normalises in 0..255 pixel units; CLIP's mean/std are in 0..1.
        self.crop_size = crop_size
        self.mean, self.std = tuple(255 * m for m in mean), tuple(255 * s for s in std)
        self.scale, self.ratio_range = tuple(scale), tuple(ratio_range)

    def __len__(self):
        return len(self.base)

    def _augment(self, sample: dict, aug_seed) -> dict:
        return train_pipeline((self.crop_size, self.crop_size), self.mean, self.std, scale=self.scale,
                              ratio_range=self.ratio_range, rng=np.random.default_rng(list(aug_seed)))(sample)

    def __getitem__(self, key):
        index, aug_seed = key
        sample = dict(self.base[index])
        out = self._augment(dict(sample), aug_seed)
        # Unseen pixels become "ignore" after cropping, so the crop rule sees the full labels (ZegCLIP).
        labels = zero_shot_labels(out["label"], self.info)
        if self.twins is None:
            return out["image"], labels
        twins = [self._augment({**sample, "image": load_image(path)}, aug_seed)["image"] for path in self.twins[index]]
        return out["image"], labels, torch.stack(twins)


def train_loader(train_set: ZeroShotTrainSet, batch_size: int, workers: int, seed: int, rank: int,
                 world_size: int, start: int) -> DataLoader:
    sampler = ResumableSampler(len(train_set), seed, rank, world_size, start)
    return DataLoader(train_set, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                      prefetch_factor=4 if workers > 0 else None, drop_last=True)
