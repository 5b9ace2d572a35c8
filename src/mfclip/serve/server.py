"""Run an app on uvicorn with the connection limits uvicorn lacks: a deadline for request headers.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) and answers 503 past a number of
connections (``limit_concurrency``), but a connection that opens and never finishes its headers, or sends
them a byte at a time, stays open indefinitely. :class:`HeaderTimeoutProtocol` is uvicorn's h11 protocol
with a timer armed whenever the connection waits for a request's headers (when it opens, and after each
response) and disarmed once they are parsed; when it fires, the connection gets 408 and is closed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from mfclip.serve.settings import ListenSettings

_logger = logging.getLogger("uvicorn.error")
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections that do not send a request's headers in time."""

    header_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    @classmethod
    def with_timeout(cls, seconds: float) -> type[HeaderTimeoutProtocol]:
        """A subclass whose connections have ``seconds`` to send each request's headers."""
        return type(cls.__name__, (cls,), {"header_timeout_s": float(seconds)})

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_timed_out)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's headers were parsed: its handler now runs
            self._disarm_header_timer()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request's headers (super() may parse a pipelined one)
        super().on_response_complete()

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        _logger.debug(
            "closing a connection that sent no complete request headers in %gs", self.header_timeout_s
        )
        try:
            if self.conn.our_state is h11.IDLE:
                body = f"request headers not received within {self.header_timeout_s:g} s\n".encode()
                headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
                headers.append((b"content-length", str(len(body)).encode()))
                response = h11.Response(status_code=408, headers=headers, reason=b"Request Timeout")
                self.transport.write(self.conn.send(response) or b"")
                self.transport.write(self.conn.send(h11.Data(data=body)) or b"")
                self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            pass  # the connection is in no state to answer: just close it
        self.transport.close()


def uvicorn_config(app: Any, listen: ListenSettings) -> Any:
    """The uvicorn configuration serving ``app`` under ``listen``."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=listen.host,
        port=listen.port,
        log_level=listen.log_level,
        http=HeaderTimeoutProtocol.with_timeout(listen.header_timeout_s),
        timeout_keep_alive=listen.keep_alive_s,
        limit_concurrency=listen.max_connections,
        lifespan="on",
    )


def return_freed_memory_to_the_system() -> bool:
    """Make glibc's malloc serve allocations of 1 MiB and more with mmap, whatever was freed before.

    By default glibc raises that threshold after large blocks are freed, so the memory of later decoded
    images comes from the heap and stays in the process once freed (the RSS ratchets up under a load of
    large uploads). Returns whether the setting took effect (False off glibc).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20))
    except (OSError, AttributeError):
        return False


def run_server(app: Any, listen: ListenSettings) -> None:
    """Serve ``app`` until interrupted (in this process, which it tunes for serving: see
    :func:`return_freed_memory_to_the_system`)."""
    import uvicorn

    return_freed_memory_to_the_system()
    uvicorn.Server(uvicorn_config(app, listen)).run()
