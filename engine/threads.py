"""How many threads the engine gives torch: all free cores, fewer when other processes are busy.

Measured on a 2-core machine (torch 2.14.1, ViT-B/16, one 224² window) while other processes kept
the load average at ~5: 2 intra-op threads took 2.2–4.5 s, 1 thread 1.5–1.7 s; with
``OMP_WAIT_POLICY=PASSIVE`` 2 threads took 1.9–2.0 s. Tiny element-wise ops were hit hardest (33 ms
each with 2 threads vs 0.12 ms with 1). An OpenMP parallel region waits for its slowest thread, and
a thread that shares its core with another busy process is descheduled for whole time slices.

So before each encode the engine looks at how much CPU *other* processes used since its last look
(``/proc/stat`` minus this process's own ``/proc/self/stat`` time) and gives torch the cores left,
at least one. Where those files do not exist (macOS, Windows) it keeps torch's default.

OpenCV keeps a thread pool of its own; images are decoded and resized on decode-ahead threads while
torch runs, so OpenCV's pool would nest inside them. A CPU segmenter therefore runs OpenCV on one
thread per calling thread (``single_threaded_opencv``): parallelism comes from the decode-ahead
threads and from torch, not from a third pool.
"""

from __future__ import annotations

import os
import threading
import time

import torch

MIN_INTERVAL_S = 0.05  # shorter windows say more about scheduler noise than about load


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _read_times() -> tuple[float, float, float] | None:
    """(busy jiffies of all CPUs, total jiffies of all CPUs, this process's jiffies), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat", encoding="ascii") as f:
            own = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return total - idle, total, float(own[11]) + float(own[12])  # utime + stime


class ThreadBudget:
    """Picks torch's intra-op thread count from the CPU time other processes used recently."""

    def __init__(self, max_threads: int | None = None):
        self.cores = available_cores()
        self.max_threads = max(1, min(max_threads or torch.get_num_threads(), self.cores))
        self.system_cpus = os.cpu_count() or self.cores
        self._lock = threading.Lock()
        self._last = (time.monotonic(), _read_times())
        self.others_busy = 0.0  # cores other processes kept busy in the last interval

    def threads(self) -> int:
        """The thread count for the next piece of work (also what it sets in torch)."""
        with self._lock:
            now, times = time.monotonic(), _read_times()
            then, before = self._last
            if times is None or before is None:
                return self.max_threads
            if now - then >= MIN_INTERVAL_S and times[1] > before[1]:
                busy, total, own = (a - b for a, b in zip(times, before))
                self.others_busy = max(0.0, (busy - own) / total * self.system_cpus)
                self._last = (now, times)
            count = max(1, min(self.max_threads, self.cores - int(self.others_busy + 0.5)))
        if count != torch.get_num_threads():
            torch.set_num_threads(count)
        return count


def single_threaded_opencv() -> None:
    import cv2

    cv2.setNumThreads(1)
