"""Micro-batching: inference threads that run ``localizer.predict`` on whatever arrived together.

The event loop never runs model code; it submits decoded images here and awaits the returned futures.
"""
from __future__ import annotations

import concurrent.futures as cf
import queue
import threading
import time

import numpy as np


class MicroBatcher:
    """Gathers images submitted from any thread or event loop and runs ``localizer.predict`` on batches.

    ``submit(array)`` returns a :class:`concurrent.futures.Future` resolving to a per-image result dict
    (or raising). ``workers`` threads each take the first waiting image, wait up to ``wait_ms`` for more
    (at most ``max_batch``), then predict the whole batch. It only waits while other requests are on their
    way (announced with :meth:`expect`, e.g. still decoding), so a lone request adds no latency. The queue
    is bounded: :meth:`submit` raises :class:`queue.Full` when ``max_queue`` images are already waiting.
    """

    def __init__(self, localizer, max_batch: int = 8, wait_ms: float = 4.0, workers: int = 1,
                 max_queue: int = 64):
        self.localizer = localizer
        self.max_batch = max(1, int(max_batch))
        self.wait_s = max(0.0, wait_ms) / 1000.0
        self._q: queue.Queue = queue.Queue(maxsize=max(1, max_queue))
        self._stop = threading.Event()
        self.batches = 0
        self.images = 0
        self._expected = 0  # requests announced (decoding) but not yet submitted
        self._exp_lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, name=f"campusgps-infer-{i}", daemon=True)
                         for i in range(max(1, int(workers)))]
        for t in self._threads:
            t.start()

    def expect(self, n: int = 1) -> None:
        """Announce (+1) or withdraw (-1) a request that will soon :meth:`submit`."""
        with self._exp_lock:
            self._expected = max(0, self._expected + n)

    def submit(self, array: np.ndarray, expected: bool = False) -> cf.Future:
        """Queue one image; ``expected=True`` when it was announced with :meth:`expect`."""
        if expected:
            self.expect(-1)
        if self._stop.is_set():
            raise RuntimeError("inference workers are shut down")
        fut: cf.Future = cf.Future()
        self._q.put_nowait((array, fut, time.perf_counter()))
        return fut

    def close(self, timeout: float = 5.0):
        self._stop.set()
        for _ in self._threads:
            try:
                self._q.put_nowait(None)
            except queue.Full:
                pass
        for t in self._threads:
            t.join(timeout)
        while True:  # fail whatever is still queued instead of leaving callers hanging
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if item is not None and not item[1].done():
                item[1].set_exception(RuntimeError("server is shutting down"))

    def _gather(self) -> list | None:
        first = self._q.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.perf_counter() + self.wait_s
        while len(batch) < self.max_batch:
            if self._q.empty() and self._expected == 0:
                break  # nobody else is on the way: do not make this request wait
            left = deadline - time.perf_counter()
            try:
                item = self._q.get(timeout=left) if left > 0 else self._q.get_nowait()
            except queue.Empty:
                break
            if item is None:  # shutdown: finish this batch, let the loop see the stop flag
                self._stop.set()
                break
            batch.append(item)
        return batch

    def _loop(self):
        while not self._stop.is_set():
            batch = self._gather()
            if batch is None:
                break
            batch = [b for b in batch if b[1].set_running_or_notify_cancel()]
            if batch:
                self._run(batch)

    def _run(self, batch: list):
        t0 = time.perf_counter()
        try:
            results = self._predict([b[0] for b in batch])
        except Exception as e:  # noqa: BLE001 - reported to the requests of this batch
            if len(batch) == 1:
                results = [e]
            else:  # one bad image must not fail its batch-mates: retry one by one
                results = []
                for b in batch:
                    try:
                        results.extend(self._predict([b[0]]))
                    except Exception as e:  # noqa: BLE001 - reported to that request only
                        results.append(e)
        t1 = time.perf_counter()
        self.batches += 1
        self.images += len(batch)
        for (_, fut, queued_at), res in zip(batch, results):
            if isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                res["timing"] = {"queue_ms": (t0 - queued_at) * 1000, "predict_ms": (t1 - t0) * 1000,
                                 "batch_size": len(batch)}
                fut.set_result(res)

    def _predict(self, arrays: list[np.ndarray]) -> list[dict]:
        p = self.localizer.predict(arrays, batch_size=max(len(arrays), 1))
        out = []
        for i in range(len(arrays)):
            out.append({"lat": p.lat[i], "lon": p.lon[i], "radius_m": p.radius_m[i],
                        "neighbors": p.neighbors[i] if p.neighbors else [],
                        "flags": p.flags[i] if p.flags else [], "error": p.errors[i] if p.errors else None,
                        "confidence": p.confidence[i] if p.confidence is not None else None,
                        "alternatives": p.alternatives[i] if p.alternatives else []})
        return out
