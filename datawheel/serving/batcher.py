"""Dynamic batching: coalesce concurrent requests into one model call.

Requests *announce* themselves when they arrive (before their body is parsed) and
*submit* their rows when ready. The batcher takes what is queued, and waits for
more only while announced requests are still on their way, up to
``max_latency_ms`` after the first row and ``max_batch_size`` rows. A lone request
is therefore never delayed, and under load batches fill up.

The model call runs on one dedicated thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

__all__ = ["DynamicBatcher"]

T = TypeVar("T")


@dataclass
class _Item:
    rows: np.ndarray
    future: asyncio.Future[tuple[object, slice]]


class DynamicBatcher(Generic[T]):
    """``run(rows) -> T`` is called with up to ``max_batch_size`` concatenated rows;
    each submitter gets ``(T, slice)``: the batch result and its own rows in it."""

    def __init__(
        self,
        run: Callable[[np.ndarray], T],
        *,
        max_batch_size: int = 64,
        max_latency_ms: float = 2.0,
        on_batch: Callable[[int], None] = lambda rows: None,
    ) -> None:
        if max_batch_size < 1 or max_latency_ms < 0:
            raise ValueError("max_batch_size must be >= 1 and max_latency_ms >= 0")
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency_ms / 1000
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._announced = 0
        self._carry: _Item | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer")
        self._task: asyncio.Task[None] | None = None

    def announce(self) -> None:
        """A request has arrived and will submit (or retract) soon."""
        self._announced += 1

    def retract(self) -> None:
        """An announced request will not submit (it failed validation)."""
        self._announced -= 1

    async def submit(self, rows: np.ndarray) -> tuple[T, slice]:
        """Queue ``rows`` (of an announced request) and wait for the batch result."""
        self._announced -= 1
        future: asyncio.Future[tuple[object, slice]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(rows, future))
        result, rows_slice = await future
        return result, rows_slice  # type: ignore[return-value]

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish queued work, then stop."""
        while not self._queue.empty() or self._carry is not None:
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def _next(self, timeout: float | None) -> _Item | None:
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        if timeout is None:
            return await self._queue.get()
        with contextlib.suppress(asyncio.QueueEmpty):
            return self._queue.get_nowait()
        if timeout <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _collect(self) -> list[_Item]:
        loop = asyncio.get_running_loop()
        first = await self._next(None)
        assert first is not None
        batch, rows = [first], first.rows.shape[0]
        deadline = loop.time() + self.max_latency
        while rows < self.max_batch_size:
            waiting = self._announced > 0 or not self._queue.empty()
            item = await self._next(deadline - loop.time() if waiting else 0)
            if item is None:
                break
            if rows + item.rows.shape[0] > self.max_batch_size:
                self._carry = item  # starts the next batch
                break
            batch.append(item)
            rows += item.rows.shape[0]
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            rows = (
                np.concatenate([item.rows for item in batch]) if len(batch) > 1 else batch[0].rows
            )
            self._on_batch(rows.shape[0])
            try:
                result = await loop.run_in_executor(self._executor, self._run, rows)
            except Exception as exc:  # the model failed: every request in the batch learns it
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            start = 0
            for item in batch:
                end = start + item.rows.shape[0]
                if not item.future.done():
                    item.future.set_result((result, slice(start, end)))
                start = end
