"""The dynamic batcher, driven by a real ONNX Runtime session of the committed default model."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.compute.runtime import LoadedModel, load_model
from service.core.errors import DeadlineExceeded, InferenceFailed, Overloaded
from service.core.settings import Settings
from service.models.batcher import BatchRecord, DynamicBatcher
from tests.service.conftest import FashionSample, Zoo

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def model(source_zoo: Zoo) -> LoadedModel:
    registry = source_zoo.registry
    entry = registry.get(registry.default)
    settings = Settings(intra_op_threads=1, calibration_s=0)
    return load_model(source_zoo.artifact(entry.name), entry, settings, max_batch_size=64)


@pytest.fixture
def samples(fashion: FashionSample, source_zoo: Zoo) -> np.ndarray:
    pp = source_zoo.registry.get(source_zoo.registry.default).preprocessing
    x = fashion.images[:64].astype(np.float32)[:, None] / 255.0
    return ((x - pp.mean[0]) / pp.std[0]).astype(np.float32)


class Recorder:
    """The real model's run, recording the batch sizes it was called with."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.sizes: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self.lock:
            self.sizes.append(len(batch))
        return self.model.run(batch)


def far(seconds: float = 30.0) -> float:
    return time.monotonic() + seconds


async def test_a_full_batch_is_cut_at_once(model: LoadedModel, samples: np.ndarray) -> None:
    run = Recorder(model)
    b = DynamicBatcher("m", run, max_batch_size=4, max_queue_delay_us=10_000_000, max_queue_size=64)
    try:
        t0 = time.perf_counter()
        out, timings = await b.submit(samples[:4], deadline=far())
        assert time.perf_counter() - t0 < 2.0  # not the 10 s delay
        assert run.sizes == [4]
        assert out.shape == (4, 10)
        assert {t.batch_size for t in timings} == {4}
    finally:
        b.stop()


async def test_a_partial_batch_waits_for_the_delay(model: LoadedModel, samples: np.ndarray) -> None:
    run = Recorder(model)
    b = DynamicBatcher("m", run, max_batch_size=8, max_queue_delay_us=150_000, max_queue_size=64)
    try:
        t0 = time.perf_counter()
        _, timings = await b.submit(samples[:3], deadline=far())
        elapsed = time.perf_counter() - t0
        assert run.sizes == [3]
        assert elapsed >= 0.15
        assert min(t.queue_ns for t in timings) >= 150_000_000
    finally:
        b.stop()


async def test_when_idle_a_lone_request_runs_at_once_and_arrivals_during_a_batch_form_the_next(
    model: LoadedModel, samples: np.ndarray
) -> None:
    started, release = threading.Event(), threading.Event()
    run = Recorder(model)

    def slow_first(batch: np.ndarray) -> np.ndarray:
        if not started.is_set():
            started.set()
            release.wait(5)  # the first batch runs until the others are queued
        return run(batch)

    delay_us = 10_000_000  # never reached: an idle batcher does not wait for it
    b = DynamicBatcher(
        "m", slow_first, max_batch_size=32, max_queue_delay_us=delay_us, max_queue_size=64, when_idle=True
    )
    try:
        t0 = time.perf_counter()
        first = asyncio.ensure_future(b.submit(samples[:1], deadline=far()))
        while not started.is_set():  # noqa: ASYNC110 (a threading.Event, set on the inference thread)
            await asyncio.sleep(0.001)
        rest = [asyncio.ensure_future(b.submit(samples[i : i + 1], deadline=far())) for i in range(1, 6)]
        while b.queued < 5:  # noqa: ASYNC110 (the batcher's queue is read, not awaited)
            await asyncio.sleep(0.001)
        release.set()
        await asyncio.gather(first, *rest)
        assert time.perf_counter() - t0 < 2.0
        assert run.sizes == [1, 5]
    finally:
        release.set()
        b.stop()


async def test_overflow_beyond_max_batch_goes_to_the_next_batch(
    model: LoadedModel, samples: np.ndarray
) -> None:
    run = Recorder(model)
    b = DynamicBatcher("m", run, max_batch_size=4, max_queue_delay_us=100_000, max_queue_size=64)
    try:
        await b.submit(samples[:10], deadline=far())
        assert run.sizes == [4, 4, 2]
        assert dict(b.stats.batches_by_size) == {4: 2, 2: 1}
        assert b.stats.items_ok == 10
    finally:
        b.stop()


async def test_requests_arriving_within_the_delay_share_a_batch(
    model: LoadedModel, samples: np.ndarray
) -> None:
    run = Recorder(model)
    b = DynamicBatcher("m", run, max_batch_size=32, max_queue_delay_us=200_000, max_queue_size=64)
    try:
        await asyncio.gather(*(b.submit(samples[i : i + 1], deadline=far()) for i in range(5)))
        assert run.sizes == [5]
    finally:
        b.stop()


async def test_results_come_back_to_the_right_request(model: LoadedModel, samples: np.ndarray) -> None:
    expected = model.run(samples)
    b = DynamicBatcher("m", model.run, max_batch_size=8, max_queue_delay_us=2_000, max_queue_size=256)
    try:

        async def one(i: int) -> tuple[int, np.ndarray]:
            await asyncio.sleep((i % 7) * 0.001)
            n = 1 + i % 3
            out, _ = await b.submit(samples[i : i + n], deadline=far())
            return i, out

        results = await asyncio.gather(*(one(i) for i in range(60)))
        for i, out in results:
            n = 1 + i % 3
            np.testing.assert_allclose(out, expected[i : i + n], rtol=1e-4, atol=1e-4)
        assert sum(k * v for k, v in b.stats.batches_by_size.items()) == sum(1 + i % 3 for i in range(60))
        assert max(b.stats.batches_by_size) > 1  # concurrency was actually batched
    finally:
        b.stop()


async def test_a_full_queue_is_rejected_with_retry_after(model: LoadedModel, samples: np.ndarray) -> None:
    b = DynamicBatcher("m", model.run, max_batch_size=64, max_queue_delay_us=500_000, max_queue_size=3)
    try:
        waiting = asyncio.create_task(b.submit(samples[:3], deadline=far()))
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded) as info:
            await b.submit(samples[3:4], deadline=far())
        assert info.value.retry_after_s is not None and info.value.retry_after_s >= 1
        assert b.stats.items_rejected == 1
        out, _ = await waiting  # the queued request still completes
        assert out.shape == (3, 10)
    finally:
        b.stop()


async def test_an_expired_request_is_answered_and_never_run(model: LoadedModel, samples: np.ndarray) -> None:
    run = Recorder(model)
    b = DynamicBatcher("m", run, max_batch_size=8, max_queue_delay_us=300_000, max_queue_size=64)
    try:
        t0 = time.perf_counter()
        with pytest.raises(DeadlineExceeded):
            await b.submit(samples[:2], deadline=time.monotonic() + 0.05)
        assert time.perf_counter() - t0 < 0.25  # answered at its deadline, not at the batch cut
        await asyncio.sleep(0.4)  # past the cut: the expired items must not have run
        assert run.sizes == []
        assert b.stats.items_expired == 2
        out, _ = await b.submit(samples[:1], deadline=far())
        assert run.sizes == [1] and out.shape == (1, 10)
    finally:
        b.stop()


async def test_expired_items_are_dropped_while_live_ones_run(model: LoadedModel, samples: np.ndarray) -> None:
    run = Recorder(model)
    b = DynamicBatcher("m", run, max_batch_size=8, max_queue_delay_us=200_000, max_queue_size=64)
    try:
        late = asyncio.create_task(b.submit(samples[:3], deadline=time.monotonic() + 0.05))
        live = asyncio.create_task(b.submit(samples[3:5], deadline=far()))
        with pytest.raises(DeadlineExceeded):
            await late
        out, _ = await live
        assert run.sizes == [2] and out.shape == (2, 10)
    finally:
        b.stop()


async def test_a_failing_batch_fails_only_its_requests(model: LoadedModel, samples: np.ndarray) -> None:
    records: list[BatchRecord] = []
    b = DynamicBatcher(
        "m",
        model.run,
        max_batch_size=8,
        max_queue_delay_us=100_000,
        max_queue_size=64,
        hooks=[records.append],
    )
    try:
        wrong = np.zeros((2, 1, 27, 27), dtype=np.float32)  # ONNX Runtime rejects this shape
        with pytest.raises(InferenceFailed):
            await b.submit(wrong, deadline=far())
        out, _ = await b.submit(samples[:2], deadline=far())
        np.testing.assert_allclose(out, model.run(samples[:2]), rtol=1e-4, atol=1e-4)
        assert (b.stats.batches_failed, b.stats.items_failed) == (1, 2)
        assert (b.stats.batches_ok, b.stats.items_ok) == (1, 2)
        assert [(r.size, r.ok) for r in records] == [(2, False), (2, True)]
    finally:
        b.stop()


async def test_inference_runs_off_the_event_loop(model: LoadedModel, samples: np.ndarray) -> None:
    threads: list[str] = []

    def run(batch: np.ndarray) -> np.ndarray:
        threads.append(threading.current_thread().name)
        return model.run(batch)

    b = DynamicBatcher("fm", run, max_batch_size=8, max_queue_delay_us=0, max_queue_size=64, threads=2)
    try:
        await asyncio.gather(*(b.submit(samples[i : i + 1], deadline=far()) for i in range(6)))
        assert threads and all(t.startswith("infer-fm-") for t in threads)
        assert threading.main_thread().name not in threads
    finally:
        b.stop()


async def test_stop_answers_queued_requests(model: LoadedModel, samples: np.ndarray) -> None:
    b = DynamicBatcher("m", model.run, max_batch_size=8, max_queue_delay_us=5_000_000, max_queue_size=64)
    pending = asyncio.create_task(b.submit(samples[:1], deadline=far()))
    await asyncio.sleep(0.01)
    b.stop()
    with pytest.raises(Exception) as info:
        await pending
    assert getattr(info.value, "retry_after_s", None) == 1


async def test_an_answered_request_finds_its_batcher_idle(model: LoadedModel, samples: np.ndarray) -> None:
    # The manager evicts only idle models: a client holding its answer must not find the model busy
    # for the moment the inference thread takes to finish its bookkeeping.
    b = DynamicBatcher("m", model.run, max_batch_size=8, max_queue_delay_us=0, max_queue_size=64)
    try:
        for i in range(50):
            await b.submit(samples[i : i + 1], deadline=far())
            assert b.idle, i
    finally:
        b.stop()
