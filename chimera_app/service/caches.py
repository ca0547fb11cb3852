"""The service's small memories: decoded images (next to the engine's feature LRU) and which
segment request of each image is the newest (only its result is delivered)."""

from __future__ import annotations

import itertools
from collections import OrderedDict

import numpy as np


class RgbCache:
    """LRU of decoded images, bounded by count and bytes (the newest image always stays), so a
    prefetched image is shown and segmented without decoding it again."""

    def __init__(self, max_items: int, max_bytes: int):
        self.max_items, self.max_bytes = max(1, max_items), max_bytes
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, key: str) -> np.ndarray | None:
        if key in self._items:
            self._items.move_to_end(key)
        return self._items.get(key)

    def put(self, key: str, rgb: np.ndarray) -> None:
        self._items[key] = rgb
        self._items.move_to_end(key)
        while len(self._items) > 1 and (len(self._items) > self.max_items
                                        or sum(a.nbytes for a in self._items.values()) > self.max_bytes):
            self._items.popitem(last=False)


class Generations:
    """Numbers segment requests and remembers each image's newest. An older request's result would
    label the image with a stale class list, so whoever delivers results drops it. Used by one
    thread (the GUI's): the check happens where the result arrives, after any newer request."""

    def __init__(self):
        self._numbers = itertools.count(1)
        self._latest: dict[str, int] = {}

    def next(self, key: str) -> int:
        generation = next(self._numbers)
        self._latest[key] = generation
        return generation

    def latest(self, key: str) -> int | None:
        return self._latest.get(key)

    def is_latest(self, key: str, generation: int) -> bool:
        return self._latest.get(key) == generation
