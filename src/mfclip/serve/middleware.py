"""ASGI middleware of the service: request-body limits, work that stops on disconnect, allowed hosts."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi.exceptions import HTTPException
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _BodyTooLarge(HTTPException):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body is larger than the upload limit of {max_bytes / 2**20:g} MiB")


class _BodyTooSlow(HTTPException):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(408, f"request body was not received within {timeout_s:g} s")


class BodyLimit:
    """Refuse request bodies above ``max_bytes`` with 413: at once when Content-Length says so, else as
    soon as the streamed body passes the limit (nothing beyond it is read). With ``timeout_s``, a body not
    fully received that many seconds after the request started gets 408."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = _BodyTooLarge(self.max_bytes)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"detail": too_large.detail}, status_code=413)(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout_s is None else loop.time() + self.timeout_s
        received = 0
        body_complete = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, body_complete
            if body_complete or deadline is None:
                message = await receive()
            else:
                try:
                    message = await asyncio.wait_for(receive(), timeout=max(deadline - loop.time(), 0.0))
                except asyncio.TimeoutError:
                    raise _BodyTooSlow(self.timeout_s or 0.0) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_complete = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise too_large
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except (_BodyTooLarge, _BodyTooSlow) as exc:
            if started:
                raise
            await JSONResponse({"detail": exc.detail}, status_code=exc.status_code)(scope, receive, send)


class CancelOnDisconnect:
    """Cancel a request's handler when its client disconnects after sending the body.

    ASGI servers keep running a handler whose client has gone; its decoding and scoring would then go on
    for nobody. Once the body is complete, this listens for ``http.disconnect`` and cancels the handler,
    whose ``finally`` blocks release what it holds. A disconnect after the response was sent cancels
    nothing.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_complete = asyncio.Event()
        disconnected = asyncio.Event()
        responded = False

        async def app_receive() -> Message:
            if body_complete.is_set():
                # Only a disconnect can come now; the listener below receives it.
                await disconnected.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected.set()
            elif not message.get("more_body", False):
                body_complete.set()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal responded
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                responded = True  # before sending: the server may report the disconnect at once
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, app_receive, tracking_send))

        async def listen() -> None:
            await body_complete.wait()
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()
            if not responded:
                handler.cancel()

        listener = asyncio.ensure_future(listen())
        try:
            await handler
        except asyncio.CancelledError:
            if not disconnected.is_set():
                raise  # cancelled from outside (server shutdown), not by the client leaving
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener


class AllowedHosts:
    """Starlette's TrustedHostMiddleware (400 for a Host header outside ``allowed_hosts``) on every path
    but ``exempt``: a load balancer's health probe usually addresses the server by IP."""

    def __init__(
        self, app: ASGIApp, allowed_hosts: list[str], exempt: tuple[str, ...] = ("/healthz",)
    ) -> None:
        self.app = app
        self.checked = TrustedHostMiddleware(app, allowed_hosts=allowed_hosts, www_redirect=False)
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope.get("path") not in self.exempt:
            await self.checked(scope, receive, send)
        else:
            await self.app(scope, receive, send)
