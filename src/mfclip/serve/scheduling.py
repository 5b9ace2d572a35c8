"""Fair, bounded and cancellable scheduling of the requests' decoding work on a few threads.

Every request opens a :class:`Session` on the :class:`WorkPool` for as long as it is processed. Opening
one is refused with :class:`ServerBusy` (503 with ``Retry-After``) when the images already in flight
server-wide plus the request's own would exceed the pool's capacity, so the queue never grows without
bound. When a worker thread frees up, the next job comes from the session with the fewest jobs running,
then the least thread time used so far, then the earliest; a request of many files therefore cannot push a
small request behind all of its files. Large jobs never occupy the last free worker, which stays for
small ones, and run at a lower CPU priority (on Linux). Closing a session (the request finished, timed
out or its client disconnected) drops its waiting jobs and sets its ``interrupt`` event, which the
running ones check between steps.

Everything here runs on the event loop thread except the jobs themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

# Jobs expected to decode more than this many bytes count as large (an 8-bit RGB image of ~2.8 MP).
LARGE_JOB_BYTES = 8 * 2**20


class ServerBusy(Exception):
    """The pool has no room for another request now; retry after ``retry_after_s`` seconds."""

    def __init__(self, in_flight: int, capacity: int, retry_after_s: int) -> None:
        super().__init__(
            f"server busy: {in_flight} images in flight (capacity {capacity}); retry in {retry_after_s} s"
        )
        self.retry_after_s = retry_after_s


# How much less CPU priority the threads of large jobs get (a nice increment, where the OS supports it).
LARGE_JOB_NICENESS = 10


def _lower_priority() -> None:
    """Raise the calling thread's nice value by LARGE_JOB_NICENESS (Linux schedules threads one by one;
    elsewhere this is skipped)."""
    with contextlib.suppress(AttributeError, OSError):
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + LARGE_JOB_NICENESS)


@dataclass(eq=False)
class _Job:
    session: Session
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    large: bool
    future: asyncio.Future[Any]
    then: Callable[[Any], None] | None = None
    seconds: float = 0.0


@dataclass(eq=False)
class Session:
    """One request's share of the pool (create it with :meth:`WorkPool.session`)."""

    order: int
    images: int
    interrupt: threading.Event = field(default_factory=threading.Event)
    waiting: deque[_Job] = field(default_factory=deque)
    running: int = 0
    used_s: float = 0.0
    jobs_started: int = 0
    closed: bool = False


class WorkPool:
    """``workers`` threads shared fairly by the sessions; at most ``capacity`` images in flight."""

    def __init__(self, workers: int, capacity: int, *, large_job_bytes: int = LARGE_JOB_BYTES) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.workers = workers
        self.capacity = capacity
        self.large_job_bytes = large_job_bytes
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mfclip-decode")
        # Large jobs run on threads of their own at a lower CPU priority, so that under load they yield
        # the cores to the event loop, the model thread and small decodes rather than slow them down.
        self._large_executor = ThreadPoolExecutor(
            max_workers=max(workers - 1, 1),
            thread_name_prefix="mfclip-decode-large",
            initializer=_lower_priority,
        )
        self._sessions: list[Session] = []
        self._order = itertools.count()
        self._running = 0
        self._in_flight = 0
        self._job_seconds = 0.05  # running mean of a job's duration, for Retry-After
        self.jobs_run = 0  # jobs started so far (for statistics and tests)

    @property
    def in_flight(self) -> int:
        """Images of the open sessions (admitted and not yet answered)."""
        return self._in_flight

    @property
    def running(self) -> int:
        """Jobs running on the threads now."""
        return self._running

    @property
    def waiting(self) -> int:
        """Jobs waiting for a thread whose caller still wants them."""
        return sum(1 for session in self._sessions for job in session.waiting if not job.future.done())

    @contextlib.contextmanager
    def session(self, images: int) -> Iterator[Session]:
        """Admit a request of ``images`` images for the duration of the ``with`` block.

        Raises :class:`ServerBusy` when they do not fit; an idle pool admits any request, so a request
        larger than the capacity is still served when nothing else is.
        """
        images = max(int(images), 1)
        if self._in_flight and self._in_flight + images > self.capacity:
            waiting = self._in_flight - self._running
            retry = math.ceil(self._job_seconds * max(waiting, 1) / self.workers)
            raise ServerBusy(self._in_flight, self.capacity, max(retry, 1))
        session = Session(order=next(self._order), images=images)
        self._sessions.append(session)
        self._in_flight += images
        try:
            yield session
        finally:
            self._close(session)

    def submit(
        self,
        session: Session,
        fn: Callable[..., T],
        *args: Any,
        cost_bytes: int = 0,
        then: Callable[[T], None] | None = None,
    ) -> asyncio.Future[T]:
        """Queue ``fn(*args)`` to run on a worker thread when the session's turn comes; its future.

        ``cost_bytes`` is what the job is expected to decode (0 for header reads): jobs above the pool's
        ``large_job_bytes`` never take the last free worker. ``then(result)`` runs on the event loop as soon
        as the job succeeds, before its thread is given to another job: follow-up jobs it submits keep the
        session's turn. Cancelling the future drops the job if it has not started; a started job runs on,
        and should check ``session.interrupt``.
        """
        if session.closed:
            raise RuntimeError("the session is closed")
        loop = asyncio.get_running_loop()
        job = _Job(session, fn, args, cost_bytes > self.large_job_bytes, loop.create_future(), then)
        session.waiting.append(job)
        self._dispatch()
        return job.future

    async def run(self, session: Session, fn: Callable[..., T], *args: Any, cost_bytes: int = 0) -> T:
        """:meth:`submit` and wait for the result (cancelling the caller cancels the job)."""
        return await self.submit(session, fn, *args, cost_bytes=cost_bytes)

    def _close(self, session: Session) -> None:
        session.closed = True
        session.interrupt.set()
        for job in session.waiting:
            job.future.cancel()
        session.waiting.clear()
        self._in_flight -= session.images
        if session.running == 0 and session in self._sessions:
            self._sessions.remove(session)

    def _eligible(self, job: _Job) -> bool:
        free = self.workers - self._running
        return not job.large or self.workers == 1 or free > 1

    def _next_job(self) -> _Job | None:
        best: Session | None = None
        for session in self._sessions:
            while session.waiting and session.waiting[0].future.done():
                session.waiting.popleft()  # its caller gave up
            if not session.waiting or not self._eligible(session.waiting[0]):
                continue
            key = (session.running, session.used_s, session.order)
            if best is None or key < (best.running, best.used_s, best.order):
                best = session
        return best.waiting.popleft() if best is not None else None

    def _dispatch(self) -> None:
        while self._running < self.workers:
            job = self._next_job()
            if job is None:
                return
            self._start(job)

    def _start(self, job: _Job) -> None:
        session = job.session
        session.running += 1
        session.jobs_started += 1
        self._running += 1
        self.jobs_run += 1
        loop = asyncio.get_running_loop()
        executor = self._large_executor if job.large else self._executor
        done = loop.run_in_executor(executor, self._call, job)
        done.add_done_callback(lambda outcome: self._finished(job, outcome))

    @staticmethod
    def _call(job: _Job) -> Any:
        started = time.perf_counter()
        try:
            return job.fn(*job.args)
        finally:
            job.seconds = time.perf_counter() - started

    def _finished(self, job: _Job, outcome: asyncio.Future[Any]) -> None:
        session = job.session
        session.running -= 1
        session.used_s += job.seconds
        self._running -= 1
        self._job_seconds = 0.8 * self._job_seconds + 0.2 * job.seconds
        if session.closed and session.running == 0 and session in self._sessions:
            self._sessions.remove(session)
        if not job.future.done():
            if outcome.cancelled():
                job.future.cancel()
            elif outcome.exception() is not None:
                job.future.set_exception(outcome.exception())  # type: ignore[arg-type]
            else:
                job.future.set_result(outcome.result())
                if job.then is not None and not session.closed:
                    job.then(outcome.result())
        self._dispatch()

    def shutdown(self) -> None:
        """Drop every waiting job and release the threads (running jobs finish in the background)."""
        for session in list(self._sessions):
            session.interrupt.set()
            for job in session.waiting:
                job.future.cancel()
            session.waiting.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._large_executor.shutdown(wait=False, cancel_futures=True)
