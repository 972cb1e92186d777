"""Micro-batches of prediction requests: the requests that arrive while the CPU is busy share one
hand-off to a worker thread, one call of each model, one store commit and one wake-up of the loop.

A request that finds a worker slot free starts at once (a lone drawing waits for nothing); under load
the requests that queue behind a running batch form the next one. Each request still gets its own
answer or its own error: a bad image fails that request only (`compute_batch`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from digitlab.api.context import AppContext
from digitlab.api.prediction import Computed, Job, compute_batch
from digitlab.api.recording import log_predictions_async

log = logging.getLogger("digitlab.api")

#: Requests in one batch at most (a batch's answers all wait for its slowest part).
MAX_BATCH = 16
#: An upload larger than this, or not a PNG, is a photo or a scan (~0.3 s for a phone photo, 100 times a
#: canvas drawing's cost): it is a batch of its own, so the drawings queued before it are not held for it.
HEAVY_BYTES = 64 * 1024
_PNG = b"\x89PNG\r\n\x1a\n"


def heavy(job: Job) -> bool:
    """Is this request's image far costlier than a canvas drawing (`HEAVY_BYTES`)?"""
    return len(job.data) > HEAVY_BYTES or not job.data.startswith(_PNG)


class PredictionBatcher:
    """Runs `compute_batch` on at most `slots` batches at once, in its own worker threads.

    `slots` is the cores this process may keep busy (`api.main.cpu_slots`): with one worker process per
    core, one slot each, so that requests queue into batches instead of fighting over the GIL."""

    def __init__(self, ctx: AppContext, slots: int, max_batch: int = MAX_BATCH):
        self.ctx = ctx
        self.slots = max(1, int(slots))
        self.max_batch = max(1, int(max_batch))
        self._executor: ThreadPoolExecutor | None = None  # started on first use, again after close()
        self._pending: deque[tuple[Job, asyncio.Future]] = deque()
        self._running = 0
        self._tasks: set[asyncio.Task] = set()

    async def predict(self, job: Job) -> Computed:
        """The request's answers, once its records are stored (or spooled, or refused: `logged`)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((job, future))
        self._dispatch(loop)
        return await future

    def close(self) -> None:
        """Wait for the batches in flight; the app's shutdown calls it (a new start gets new threads)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._pending and self._running < self.slots:
            batch = self._next_batch()
            if not batch:
                continue
            self._running += 1
            task = loop.create_task(self._run(loop, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _next_batch(self) -> list[tuple[Job, asyncio.Future]]:
        """The requests at the head of the queue, in order: a `heavy` one alone, else the drawings up to the
        next heavy one (first come, first served: nothing waits behind requests that came later)."""
        batch: list[tuple[Job, asyncio.Future]] = []
        while self._pending and len(batch) < self.max_batch:
            job, future = self._pending[0]
            if future.done():  # a request cancelled while it queued is not computed
                self._pending.popleft()
                continue
            if heavy(job) and batch:
                break
            batch.append(self._pending.popleft())
            if heavy(job):
                break
        return batch

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[Job, asyncio.Future]]) -> None:
        try:
            try:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="digitlab-cpu")
                outcomes, logged = await loop.run_in_executor(self._executor, self._compute, [j for j, _ in batch])
            finally:  # the CPU slot is free as soon as the computing is done: the next batch starts
                self._running -= 1  # while this one's records are being committed
                self._dispatch(loop)
            await asyncio.wrap_future(logged)  # never fails: a store failure leaves `logged: false`
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
        except BaseException as exc:  # the batch itself failed (a bug): each waiting request hears it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    def _compute(self, jobs: list[Job]) -> tuple[list[Computed | BaseException], Future]:
        """In a worker thread: the answers, and the store's Future for all their records at once."""
        outcomes = compute_batch(self.ctx, jobs)
        answered = [o for o in outcomes if isinstance(o, Computed)]
        merged = Computed(
            [r for c in answered for r in c.results], "", [record for c in answered for record in c.records]
        )
        return outcomes, log_predictions_async(self.ctx, merged)
