"""Run the model for concurrent requests: one worker thread, optionally with dynamic micro-batching.

Requests ``submit`` one preprocessed image each. With batching on, images that arrive within
``max_wait_ms`` of the first waiting one (up to ``max_batch_size``) run as one forward pass; with it off,
each image runs alone. Either way the model runs in a single dedicated thread, so the event loop never
blocks and forward passes never compete for the same cores.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

T = TypeVar("T")

# images (B, 3, S, S) -> P(fake) (B,)
BatchFn = Callable[[torch.Tensor], torch.Tensor]


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
        self._queue: asyncio.Queue[tuple[torch.Tensor, asyncio.Future[float]]] | None = None
        self._task: asyncio.Task[None] | None = None

    async def run_in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        """Run any model work (e.g. an explanation) in the model thread, after what is already queued."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn, *args)

    async def submit(self, image: torch.Tensor) -> float:
        """P(fake) of one preprocessed image (3, S, S)."""
        if not self.batching:
            scores = await self.run_in_worker(self._run, image.unsqueeze(0))
            return float(scores[0])
        self._ensure_started()
        assert self._queue is not None
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        await self._queue.put((image, future))
        return await future

    def _run(self, images: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(int(images.shape[0]))
        return self.fn(images).float().cpu()

    def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._collect_and_run(self._queue))

    async def _collect_and_run(
        self, queue: asyncio.Queue[tuple[torch.Tensor, asyncio.Future[float]]]
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch_size:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    # Take whatever else is already waiting, without waiting any longer.
                    while len(batch) < self.max_batch_size and not queue.empty():
                        batch.append(queue.get_nowait())
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), timeout=remaining))
                except asyncio.TimeoutError:
                    break
            # A request that timed out or disconnected no longer needs its score.
            live = [(image, future) for image, future in batch if not future.done()]
            if not live:
                continue
            try:
                scores = await self.run_in_worker(self._run, torch.stack([image for image, _ in live]))
            except Exception as exc:
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), score in zip(live, scores.tolist(), strict=True):
                if not future.done():
                    future.set_result(float(score))

    async def aclose(self) -> None:
        """Stop collecting batches and release the model thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self._task
            self._task = None
        self.executor.shutdown(wait=False, cancel_futures=True)
