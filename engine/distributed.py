"""Running one job over several processes with ``torchrun``: who am I, which device, merge results.

Plain ``torch.distributed``: NCCL between GPUs, gloo on CPUs. Without ``torchrun`` (no WORLD_SIZE)
everything here is a no-op for a single process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    device: str  # what this process passes to load_segmenter
    # Whether ``start`` joined the process group for this context (then ``close`` leaves it). A stage
    # started inside a job that already joined (``chimera-train bundle``'s CLIP, then Chimera-Seg)
    # shares the group and leaves it open: a group left and re-joined while another rank is still busy
    # finds that rank's stale address in torchrun's store and fails to connect.
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, items: list) -> list:
        """Every process's ``items`` concatenated on rank 0 (rank order); other ranks get []."""
        if self.world_size == 1:
            return items
        parts = [None] * self.world_size if self.is_main else None
        dist.gather_object(items, parts, dst=0)
        return [x for part in parts for x in part] if self.is_main else []

    def barrier(self) -> None:
        """Wait until every process gets here (e.g. until rank 0 has written files the others read)."""
        if self.world_size > 1:
            dist.barrier()

    def broadcast(self, value):
        """Rank 0's ``value`` (anything picklable) on every process."""
        if self.world_size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.owns_group and self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def is_main_process() -> bool:
    """Rank 0 of a ``torchrun`` job (or a plain process), without joining any process group."""
    return int(os.environ.get("RANK", "0")) == 0


def start(requested_device: str = "auto") -> Context:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Context(0, 1, requested_device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and requested_device in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    else:
        device = "cpu" if requested_device == "auto" else requested_device
    if dist.is_initialized():  # a stage of a job that joined already: share its group
        return Context(dist.get_rank(), dist.get_world_size(), device)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return Context(dist.get_rank(), dist.get_world_size(), device, owns_group=True)


@contextlib.contextmanager
def progress(total: int, enabled: bool, unit: str = "img"):
    """A tqdm bar (or a silent stand-in) with ``update(n)``."""
    if not enabled:
        yield _Silent()
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, unit=unit, dynamic_ncols=True) as bar:
        yield bar


class _Silent:
    def update(self, n: int = 1) -> None:
        pass
