"""Run the model for concurrent requests: one worker thread, optionally with dynamic micro-batching.

Requests ``submit`` one preprocessed image each, tagged with an ``owner`` (their request). With batching
on, images that arrive within ``max_wait_ms`` of the first waiting one (up to ``max_batch_size``) run as
one forward pass, taken round-robin across owners so a request of many images cannot keep another's out
of the next batch; images whose request has gone (timed out, disconnected) are dropped before the pass.
With batching off, each image runs alone. Either way the model runs in a single dedicated thread, so the
event loop never blocks and forward passes never compete for the same cores.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

T = TypeVar("T")

# images (B, 3, S, S) -> P(fake) (B,)
BatchFn = Callable[[torch.Tensor], torch.Tensor]
_Waiting = tuple[torch.Tensor, "asyncio.Future[float]"]


class ModelRunner:
    """Scores single images through ``fn``, batching concurrent submissions when ``batching`` is on."""

    def __init__(
        self, fn: BatchFn, *, batching: bool = True, max_batch_size: int = 16, max_wait_ms: float = 5.0
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.fn = fn
        self.batching = batching
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mfclip-model")
        self.batch_sizes: list[int] = []  # sizes of the forward passes run so far (for tests and stats)
        # Waiting images per owner, owners in the order they are next served.
        self._waiting: OrderedDict[Hashable, deque[_Waiting]] = OrderedDict()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def run_in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        """Run any model work (e.g. an explanation) in the model thread, after what is already queued."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn, *args)

    async def submit(self, image: torch.Tensor, owner: Hashable | None = None) -> float:
        """P(fake) of one preprocessed image (3, S, S); ``owner`` groups the images of one request."""
        if not self.batching:
            scores = await self.run_in_worker(self._run, image.unsqueeze(0))
            return float(scores[0])
        self._ensure_started()
        assert self._arrived is not None
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        key = owner if owner is not None else object()
        self._waiting.setdefault(key, deque()).append((image, future))
        self._arrived.set()
        return await future

    @property
    def waiting(self) -> int:
        """Images waiting for a forward pass whose request still wants them."""
        return sum(1 for queue in self._waiting.values() for _, future in queue if not future.done())

    def _run(self, images: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(int(images.shape[0]))
        return self.fn(images).float().cpu()

    def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._waiting.clear()
            self._arrived = asyncio.Event()
            self._task = loop.create_task(self._collect_and_run(self._arrived))

    def _take_batch(self) -> list[_Waiting]:
        """Up to ``max_batch_size`` live images, one per owner in turn; served owners move to the back."""
        batch: list[_Waiting] = []
        while len(batch) < self.max_batch_size and self._waiting:
            owner, queue = next(iter(self._waiting.items()))
            while queue and queue[0][1].done():
                queue.popleft()  # its request no longer needs the score
            if queue:
                batch.append(queue.popleft())
            if queue:
                self._waiting.move_to_end(owner)
            else:
                del self._waiting[owner]
        return batch

    async def _collect_and_run(self, arrived: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await arrived.wait()
            deadline = loop.time() + self.max_wait_s
            while self.waiting < self.max_batch_size:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                arrived.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(arrived.wait(), timeout=remaining)
            batch = self._take_batch()
            if self._waiting:
                arrived.set()  # more is waiting: collect the next batch straight away
            else:
                arrived.clear()
            if not batch:
                continue
            try:
                scores = await self.run_in_worker(self._run, torch.stack([image for image, _ in batch]))
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), score in zip(batch, scores.tolist(), strict=True):
                if not future.done():
                    future.set_result(float(score))

    async def aclose(self) -> None:
        """Stop collecting batches and release the model thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self._task
            self._task = None
        for queue in self._waiting.values():
            for _, future in queue:
                future.cancel()
        self._waiting.clear()
        self.executor.shutdown(wait=False, cancel_futures=True)
