"""The engine's thread budget follows the CPU time other processes use."""

import torch

from chimera_engine import threads


def test_threads_follow_other_processes_load(monkeypatch):
    clock = iter([0.0, 1.0, 2.0, 3.0, 4.0, 4.01])
    monkeypatch.setattr(threads.time, "monotonic", lambda: next(clock))
    # (busy, total, own) jiffies of a 4-CPU system (totals grow by 400 per second)
    samples = iter([(0, 0, 0), (100, 400, 100), (300, 800, 100), (700, 1200, 100), (900, 1600, 300),
                    (905, 1604, 300)])
    monkeypatch.setattr(threads, "_read_times", lambda: next(samples))
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    before = torch.get_num_threads()
    try:
        budget = threads.ThreadBudget(max_threads=4)
        assert budget.threads() == 4  # only this process was busy: every core is free
        assert budget.threads() == 2  # others used 200 of 400 jiffies = 2 cores
        assert torch.get_num_threads() == 2
        assert budget.threads() == 1  # others used all 4 cores: still one thread, never zero
        assert budget.threads() == 4  # the load went away
        assert budget.threads() == 4  # 10 ms later: too short to judge, the last verdict stands
    finally:
        torch.set_num_threads(before)


def test_without_proc_files_torch_keeps_its_count(monkeypatch):
    monkeypatch.setattr(threads, "_read_times", lambda: None)
    budget = threads.ThreadBudget(max_threads=1)
    assert budget.threads() == 1


def test_real_proc_files_give_a_sane_count():
    budget = threads.ThreadBudget()
    n = budget.threads()
    assert 1 <= n <= threads.available_cores()


def test_a_cpu_segmenter_keeps_opencv_from_nesting_a_pool(tiny_segmenter):
    import cv2

    assert tiny_segmenter.thread_budget is not None
    assert cv2.getNumThreads() == 1


def test_importing_engine_makes_openmp_threads_sleep_at_barriers_unless_the_user_chose():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = "import chimera_engine, os; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"
