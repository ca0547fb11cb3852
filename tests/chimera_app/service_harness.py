"""An EngineService on a plain thread, its results collected in a list: the service without Qt."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np

from chimera_app.service.engine_service import EngineService
from chimera_app.service.requests import LoadModel, ModelLoaded
from chimera_engine.images import load_image

TINY = "clip:chimera-tiny/random"
WAIT = 20.0  # seconds; generous: the test machine is shared


def write_image(path, seed, size=(48, 64)):
    rgb = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    cv2.imwrite(str(path), rgb[:, :, ::-1])
    return path


class CountingDecoder:
    """``load_image`` that records every decode (in order) and can hold the GIL ``slow`` seconds."""

    def __init__(self):
        self.calls: list[str] = []
        self.slow = 0.0

    def __call__(self, path):
        self.calls.append(path.name)
        end = time.perf_counter() + self.slow
        while time.perf_counter() < end:  # busy Python: the worst case for other threads (GIL)
            sum(range(1000))
        return load_image(path)


class Harness:
    def __init__(self, decode=load_image):
        self.results: list[object] = []
        self._cond = threading.Condition()
        self.service = EngineService(self._emit, threads=1, decode=decode)
        self._thread = threading.Thread(target=self.service.run, daemon=True)
        self._thread.start()

    def _emit(self, result) -> None:
        with self._cond:
            self.results.append(result)
            self._cond.notify_all()

    def of(self, kind) -> list:
        with self._cond:
            return [r for r in self.results if isinstance(r, kind)]

    def wait_for(self, kind, count: int = 1, timeout: float = WAIT) -> list:
        """Wait until ``count`` results of type ``kind`` arrived; returns them all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len([r for r in self.results if isinstance(r, kind)]) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"no {count} x {kind.__name__} within {timeout} s; got {self.results}"
                self._cond.wait(left)
            return [r for r in self.results if isinstance(r, kind)]

    def wait_until(self, condition, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "condition not met in time"
            time.sleep(0.01)

    def load(self, name: str = TINY) -> ModelLoaded:
        self.service.submit(LoadModel(name, "cpu", "fp32"))
        return self.wait_for(ModelLoaded)[-1]

    def close(self) -> None:
        self.service.stop()
        self._thread.join(WAIT)
        self.service.close()
        assert not self._thread.is_alive()
