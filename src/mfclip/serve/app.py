"""The HTTP service: score uploaded images, explain them, describe the model, and a small web page.

``create_app(detector, settings)`` builds a FastAPI app around a loaded :class:`~mfclip.Detector`.
Uploads are identified by their magic bytes (never the file name or declared content type), size- and
pixel-limited, decoded off the event loop, and scored through a :class:`~mfclip.serve.batching.ModelRunner`
that batches concurrent requests on the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

import torch
from fastapi import Depends, FastAPI, File, Request, Security, UploadFile
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mfclip import __version__
from mfclip.data.decode import ImageDecodeError, bomb_pixels, load_image
from mfclip.serve.batching import ModelRunner
from mfclip.serve.uploads import SUPPORTED_IMAGE_FORMATS, describe_non_image, sniff_image_format
from mfclip.utils.config import StrictConfig

if TYPE_CHECKING:
    from mfclip.inference.detector import Detector


class ServeSettings(StrictConfig):
    """Limits and batching of the HTTP service."""

    api_key: str | None = Field(None, description="When set, /v1 routes need it (X-API-Key or Bearer).")
    max_upload_mb: float = Field(20.0, gt=0, description="Largest request body, in MiB.")
    max_pixels: int = Field(40_000_000, gt=0, description="Largest image (width x height) decoded.")
    max_files: int = Field(32, ge=1, description="Most files in one /v1/detect request.")
    timeout_s: float = Field(
        60.0, gt=0, description="Seconds to receive a request body (else 408), then to process it (else 504)."
    )
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="P(fake) at or above which label is fake.")
    batching: bool = Field(True, description="Batch concurrent requests on the model.")
    batch_max_size: int = Field(16, ge=1, description="Most images in one batched forward pass.")
    batch_max_wait_ms: float = Field(5.0, ge=0, description="Longest wait for a batch to fill, in ms.")


class FileResult(BaseModel):
    """The score of one uploaded file, or why it could not be scored."""

    filename: str | None
    status: int = Field(description="HTTP-style status of this file: 200, or the 4xx of its error.")
    p_fake: float | None = None
    label: str | None = Field(None, description="'fake' when p_fake >= threshold, else 'real'.")
    box: list[int] | None = Field(None, description="Face box x0, y0, x1, y1 when face detection is on.")
    error: str | None = None


class DetectResponse(BaseModel):
    threshold: float
    results: list[FileResult]


@dataclass
class _UploadError(Exception):
    status: int
    message: str


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


def _undecodable(kind: str, exc: Exception) -> str:
    """Why a file whose magic bytes say ``kind`` could not be opened, without PIL's object reprs."""
    reason = (
        ""
        if isinstance(exc, UnidentifiedImageError)
        else re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(exc))
    )
    reason = " ".join(reason.split())
    return f"not a decodable {kind.upper()} image" + (f" (corrupt header: {reason})" if reason else "")


_API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="The server's API key.")
_BEARER = HTTPBearer(auto_error=False, description="The server's API key as a bearer token.")


def create_app(detector: Detector, settings: ServeSettings | None = None) -> FastAPI:
    """A FastAPI app serving ``detector`` under ``settings`` (defaults: no API key, batching on)."""
    settings = settings or ServeSettings()
    runner = ModelRunner(
        detector.score,
        batching=settings.batching,
        max_batch_size=settings.batch_max_size,
        max_wait_ms=settings.batch_max_wait_ms,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await runner.aclose()

    app = FastAPI(
        title="mfclip",
        version=__version__,
        summary="Detect diffusion-generated and manipulated face images with an MFCLIP detector.",
        lifespan=lifespan,
    )
    app.add_middleware(
        BodyLimit, max_bytes=int(settings.max_upload_mb * 1024 * 1024), timeout_s=settings.timeout_s
    )
    app.state.detector = detector
    app.state.settings = settings
    app.state.runner = runner

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    async def require_api_key(
        key: str | None = Security(_API_KEY_HEADER),
        bearer: HTTPAuthorizationCredentials | None = Security(_BEARER),
    ) -> None:
        if settings.api_key is None:
            return
        supplied = key or (bearer.credentials if bearer is not None else None)
        if supplied is None or not hmac.compare_digest(supplied.encode(), settings.api_key.encode()):
            message = "missing API key" if supplied is None else "invalid API key"
            raise HTTPException(
                401,
                f"{message}: send it in the X-API-Key header or as 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def decode_upload(data: bytes, filename: str | None) -> Image.Image:
        name = filename or "<upload>"
        if not data:
            raise _UploadError(400, f"{name}: empty file (0 bytes)")
        kind = sniff_image_format(data)
        if kind is None:
            kinds = ", ".join(SUPPORTED_IMAGE_FORMATS)
            raise _UploadError(
                415,
                f"{name}: not a supported image (content looks like {describe_non_image(data)}); "
                f"send one of: {kinds}",
            )
        try:
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
        except Image.DecompressionBombError as exc:
            # PIL refuses headers above ~179 MP before we can read the size: still a pixel-limit refusal.
            declared = bomb_pixels(exc)
            size = f"{declared} pixels, above" if declared is not None else "above"
            raise _UploadError(413, f"{name}: image is {size} the limit of {settings.max_pixels}") from None
        except Exception as exc:
            raise _UploadError(422, f"{name}: {_undecodable(kind, exc)}") from None
        if width * height > settings.max_pixels:
            raise _UploadError(
                413,
                f"{name}: image is {width}x{height} = {width * height} pixels, "
                f"above the limit of {settings.max_pixels}",
            )
        try:
            return load_image(data, max_pixels=settings.max_pixels, name=name)
        except ImageDecodeError as exc:
            raise _UploadError(422, str(exc)) from None

    def prepare_upload(data: bytes, filename: str | None) -> tuple[torch.Tensor, list[int] | None]:
        image = decode_upload(data, filename)
        prepared = detector.prepare(image)
        return prepared.tensor, (list(prepared.box) if prepared.box is not None else None)

    async def score_upload(upload: UploadFile) -> FileResult:
        try:
            data = await upload.read()
            tensor, box = await asyncio.to_thread(prepare_upload, data, upload.filename)
        except _UploadError as exc:
            return FileResult(filename=upload.filename, status=exc.status, error=exc.message)
        p_fake = await runner.submit(tensor)
        label = "fake" if p_fake >= settings.threshold else "real"
        return FileResult(filename=upload.filename, status=200, p_fake=p_fake, label=label, box=box)

    async def with_timeout(work: Any) -> Any:
        try:
            return await asyncio.wait_for(work, timeout=settings.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"request timed out after {settings.timeout_s:g} s") from None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        page = resources.files("mfclip.serve").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(page)

    @app.get("/healthz", summary="Liveness check")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model", summary="The model card", dependencies=[Depends(require_api_key)])
    async def model_card() -> dict[str, Any]:
        card = detector.model_card()
        card["serving"] = {
            "threshold": settings.threshold,
            "batching": settings.batching,
            "max_upload_mb": settings.max_upload_mb,
            "max_pixels": settings.max_pixels,
        }
        return card

    @app.post(
        "/v1/detect",
        summary="Score one or more images",
        response_model=DetectResponse,
        dependencies=[Depends(require_api_key)],
        responses={
            400: {"description": "every file was empty"},
            413: {"description": "request or image too large"},
            415: {"description": "no file was a supported image"},
            408: {"description": "the request body was not received in time"},
            422: {"description": "no file could be decoded"},
            504: {"description": "processing timed out"},
        },
    )
    async def detect(
        file: list[UploadFile] = File(..., description="Image file(s); repeat the field for several."),
    ) -> Any:
        if len(file) > settings.max_files:
            raise HTTPException(
                413, f"too many files: {len(file)} (at most {settings.max_files} per request)"
            )
        results: list[FileResult] = await with_timeout(asyncio.gather(*(score_upload(f) for f in file)))
        response = DetectResponse(threshold=settings.threshold, results=results)
        if all(r.error is not None for r in results):
            # Nothing could be scored: the request as a whole is bad input.
            first = results[0]
            body = {"detail": first.error, **response.model_dump()}
            return JSONResponse(body, status_code=first.status)
        return response

    @app.post(
        "/v1/explain",
        summary="Explain one image: a PNG panel with Grad-CAM, the richest patch and its noise residual",
        response_class=Response,
        dependencies=[Depends(require_api_key)],
        responses={200: {"content": {"image/png": {}}}, 400: {}, 408: {}, 413: {}, 415: {}, 422: {}, 504: {}},
    )
    async def explain(file: UploadFile = File(..., description="One image file.")) -> Response:
        data = await file.read()
        try:
            image = await asyncio.to_thread(decode_upload, data, file.filename)
        except _UploadError as exc:
            raise HTTPException(exc.status, exc.message) from None
        explanation = await with_timeout(
            runner.run_in_worker(functools.partial(detector.explain, threshold=settings.threshold), image)
        )
        png = await asyncio.to_thread(explanation.to_png)
        headers = {"X-P-Fake": f"{explanation.p_fake:.6f}", "X-Label": explanation.label}
        return Response(png, media_type="image/png", headers=headers)

    return app
