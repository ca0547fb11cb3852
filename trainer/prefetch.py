"""Prepare the next training step's inputs on a background thread while this step trains.

A step of ``chimera-train shapes-clip`` spends most of its time in torch kernels that release the GIL
and keep both cores of a small CPU busy, but not all of it: drawing a batch from the scene bank
(captioning in Python, tokenising new captions, normalising 128 images) is single-threaded work
that leaves the other core idle. Run one step ahead, that work overlaps the model's
(``benchmarks/clip_pretrain_loop.py`` measures both ways).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

Key = TypeVar("Key")
Value = TypeVar("Value")


def ahead(make: Callable[[Key], Value], keys: Iterable[Key], enabled: bool = True) -> Iterator[tuple[Key, Value]]:
    """``(key, make(key))`` for every key in order; ``make(next key)`` already runs on a background
    thread while the caller works on the current one. ``make`` must not depend on what the caller
    does with earlier values. An exception in ``make`` reaches the caller at that key."""
    if not enabled:
        for key in keys:
            yield key, make(key)
        return
    keys = iter(keys)
    with ThreadPoolExecutor(1, thread_name_prefix="chimera-prefetch") as pool:
        key = next(keys, _END)
        upcoming = pool.submit(make, key) if key is not _END else None
        while upcoming is not None:
            value = upcoming.result()
            following = next(keys, _END)
            current, upcoming = key, (pool.submit(make, following) if following is not _END else None)
            key = following
            yield current, value


_END = object()
