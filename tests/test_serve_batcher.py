"""Dynamic batching: coalescing under concurrency, no delay for a lone request."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from datawheel.serving.batcher import DynamicBatcher


def _echo_batcher(
    max_batch_size: int,
    max_latency_ms: float,
    sizes: list[int],
    gate: threading.Event | None = None,
) -> DynamicBatcher[np.ndarray]:
    def run(rows: np.ndarray) -> np.ndarray:
        if gate is not None:
            gate.wait(5)
        sizes.append(rows.shape[0])
        return rows * 2

    return DynamicBatcher(run, max_batch_size=max_batch_size, max_latency_ms=max_latency_ms)


async def _submit(b: DynamicBatcher[np.ndarray], value: float, n: int = 1) -> np.ndarray:
    b.announce()
    result, rows = await b.submit(np.full((n, 2), value, np.float32))
    return result[rows]


def test_concurrent_requests_are_coalesced_and_answered_with_their_own_rows() -> None:
    async def main() -> tuple[list[np.ndarray], list[int]]:
        sizes: list[int] = []
        gate = threading.Event()
        b = _echo_batcher(8, 50, sizes, gate)
        b.start()
        first = asyncio.ensure_future(_submit(b, 0))  # occupies the model while others queue
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(_submit(b, float(i), n=1 + i % 2)) for i in range(1, 13)]
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.gather(first, *rest)
        await b.stop()
        return results, sizes

    results, sizes = asyncio.run(main())
    for i, out in enumerate(results):
        assert out.shape == (1 + i % 2 if i else 1, 2)
        assert np.all(out == 2 * i)
    assert sum(sizes) == 1 + sum(1 + i % 2 for i in range(1, 13))
    assert len(sizes) < 13  # coalesced
    assert max(sizes) <= 8  # never above max_batch_size


def test_lone_request_is_not_held_for_the_latency_window() -> None:
    async def main() -> np.ndarray:
        b = _echo_batcher(64, 60_000, [])  # a one-minute window must not apply
        b.start()
        out = await asyncio.wait_for(_submit(b, 3.0), timeout=5)
        await b.stop()
        return out

    assert np.all(asyncio.run(main()) == 6.0)


def test_model_failure_reaches_every_request_in_the_batch() -> None:
    def run(rows: np.ndarray) -> np.ndarray:
        raise RuntimeError("model broke")

    async def main() -> None:
        b: DynamicBatcher[np.ndarray] = DynamicBatcher(run, max_batch_size=4, max_latency_ms=1)
        b.start()
        with pytest.raises(RuntimeError, match="model broke"):
            await _submit(b, 1.0)
        await b.stop()

    asyncio.run(main())
