"""Micro-batching behind a bounded queue: many requests, one `predict` call per batch.

Each model has one worker thread. Requests put their images in the model's queue (all or none:
a request whose images do not all fit is refused with `QueueFull`, which the app turns into a
429 with Retry-After); the worker takes up to `max_batch` images, waiting at most `max_wait_s`
after the first for more to arrive, calls `predictor.predict` once and hands each caller its
result through a `concurrent.futures.Future`. The queue never grows past `max_queue` images, so
a burst past capacity is answered at once instead of piling up latency.

The worker reads the predictor from its `ModelSlot` at each batch, so a hot swap takes effect at
the next batch and a batch in flight finishes on the model it started with.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from fovea.errors import ConfigError, FoveaError


class QueueFull(FoveaError):
    """The model's queue has no room for the request; `retry_after_s` is an estimate of when it will."""

    def __init__(self, model: str, depth: int, limit: int, n: int, retry_after_s: int):
        self.model, self.depth, self.limit, self.retry_after_s = model, depth, limit, retry_after_s
        super().__init__(f"model {model!r}: queue holds {depth} of {limit} images, no room for {n} more. "
                         f"Fix: retry after {retry_after_s} s, send fewer images per request, or start the "
                         "server with a larger --max-queue.")


@dataclass
class Job:
    """One image waiting for its result. t_enqueued: time.perf_counter() when queued."""

    image: np.ndarray
    future: Future = field(default_factory=Future)
    t_enqueued: float = 0.0
    t_started: float = 0.0       # when its batch went into predict
    t_done: float = 0.0
    batch_size: int = 0


class MicroBatcher:
    """A bounded queue of images and a worker thread that predicts them in batches.

    get_predictor: returns the current predictor (read once per batch: hot swap).
    on_batch(jobs): called after each batch (metrics); errors in it are ignored.
    """

    def __init__(self, name: str, get_predictor: Callable[[], Any], max_batch: int = 8, max_wait_s: float = 0.005,
                 max_queue: int = 64, on_batch: Callable[[list[Job]], None] | None = None):
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ConfigError(f"model {name!r}: max_batch={max_batch} and max_queue={max_queue} must be >= 1, "
                              f"max_wait_s={max_wait_s} >= 0")
        self.name, self.get_predictor = name, get_predictor
        self.max_batch, self.max_wait_s, self.max_queue = int(max_batch), float(max_wait_s), int(max_queue)
        self.on_batch = on_batch
        self._jobs: deque[Job] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._s_per_image = 0.01     # running estimate for Retry-After
        self.n_batches = 0
        self.n_images = 0
        self._thread = threading.Thread(target=self._loop, name=f"serve-batch-{name}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Images waiting (not counting the batch being predicted)."""
        return len(self._jobs)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    def retry_after_s(self, n: int) -> int:
        """Whole seconds until the queue has likely drained enough for n more images (at least 1)."""
        return max(1, math.ceil((len(self._jobs) + n) * self._s_per_image))

    def submit(self, images: list[np.ndarray]) -> list[Job]:
        """Queue every image of one request or none (QueueFull); returns their jobs in order."""
        with self._cv:
            if self._closed:
                raise QueueFull(self.name, len(self._jobs), self.max_queue, len(images), 1)
            if len(self._jobs) + len(images) > self.max_queue:
                raise QueueFull(self.name, len(self._jobs), self.max_queue, len(images), self.retry_after_s(len(images)))
            now = time.perf_counter()
            jobs = [Job(im, t_enqueued=now) for im in images]
            self._jobs.extend(jobs)
            self._cv.notify()
        return jobs

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop taking work; queued jobs are still predicted, then the worker ends."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout_s)

    # ------------------------------------------------------------------ worker
    def _take_batch(self) -> list[Job]:
        """Block for the first job, then gather up to max_batch within max_wait_s of it."""
        with self._cv:
            while not self._jobs and not self._closed:
                self._cv.wait()
            if not self._jobs:
                return []
            t_end = time.perf_counter() + self.max_wait_s
            while len(self._jobs) < self.max_batch and not self._closed:
                left = t_end - time.perf_counter()
                if left <= 0:
                    break
                self._cv.wait(left)
            return [self._jobs.popleft() for _ in range(min(self.max_batch, len(self._jobs)))]

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                return
            self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        t0 = time.perf_counter()
        for j in batch:
            j.t_started, j.batch_size = t0, len(batch)
        try:
            results = self.get_predictor().predict([j.image for j in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"predict returned {len(results)} results for {len(batch)} images")
        except BaseException as exc:   # every caller gets the error; the worker lives on
            t1 = time.perf_counter()
            for j in batch:
                j.t_done = t1
                j.future.set_exception(exc)
            return
        t1 = time.perf_counter()
        self._s_per_image = 0.8 * self._s_per_image + 0.2 * (t1 - t0) / len(batch)
        self.n_batches += 1
        self.n_images += len(batch)
        for j in batch:
            j.t_done = t1
        if self.on_batch is not None:   # before the results: a caller that reads /metrics next sees it
            try:
                self.on_batch(batch)
            except Exception:
                pass
        for j, r in zip(batch, results):
            j.future.set_result(r)
