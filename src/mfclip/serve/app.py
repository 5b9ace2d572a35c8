"""The HTTP service: score uploaded images, explain them, describe the model, and a small web page.

``create_app(detector, settings)`` builds a FastAPI app around a loaded :class:`~mfclip.Detector`.
Uploads are identified by their magic bytes (never the file name or declared content type); their
headers are checked against the pixel and decoded-size limits (per image and per request) before any
pixel is decoded. Decoding and resizing run on a :class:`~mfclip.serve.scheduling.WorkPool` shared
fairly between requests, scoring on a :class:`~mfclip.serve.batching.ModelRunner` that batches concurrent
requests on the model. A request past its deadline, or whose client disconnected, stops: its waiting
work is dropped and its running work stops at the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import re
from collections.abc import AsyncIterator, Awaitable
from importlib import resources
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from fastapi import Depends, FastAPI, File, Request, Security, UploadFile
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from mfclip import __version__
from mfclip.data.decode import DecodeInterrupted, ImageDecodeError, OpenedImage
from mfclip.schema import class_name
from mfclip.serve.batching import ModelRunner
from mfclip.serve.middleware import AllowedHosts, BodyLimit, CancelOnDisconnect
from mfclip.serve.scheduling import ServerBusy, Session, WorkPool
from mfclip.serve.settings import ServeSettings
from mfclip.serve.uploads import UploadError, open_upload

if TYPE_CHECKING:
    from mfclip.inference.detector import Detector

__all__ = ["DetectResponse", "FileResult", "ModelInfo", "ServeSettings", "create_app"]

T = TypeVar("T")

SYNTHETIC_WARNING = (
    "this model was trained on SYNTHETIC data only: its scores on real photos are not evidence"
)


class FileResult(BaseModel):
    """The score of one uploaded file, or why it could not be scored."""

    filename: str | None
    status: int = Field(description="HTTP-style status of this file: 200, or the 4xx of its error.")
    p_fake: float | None = None
    label: str | None = Field(None, description="'fake' when p_fake >= threshold, else 'real'.")
    box: list[int] | None = Field(None, description="Face box x0, y0, x1, y1 when face detection is on.")
    error: str | None = None


class ModelInfo(BaseModel):
    """Which model answered, and whether it was trained on synthetic data only."""

    name: str
    synthetic: bool = Field(description="Trained on the synthetic benchmark: not evidence on real photos.")


class DetectResponse(BaseModel):
    threshold: float
    model: ModelInfo
    warning: str | None = Field(None, description="Set when the scores need a caveat (synthetic model).")
    results: list[FileResult]


_API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="The server's API key.")
_BEARER = HTTPBearer(auto_error=False, description="The server's API key as a bearer token.")
# An absolute POSIX path (two components at least) or Windows path inside free text; not part of a URL.
_ABSOLUTE_PATH_IN_TEXT = re.compile(r"(?<![\w.:/~-])(?:/[^\s\"'`<>()/]+)+/?|\b[A-Za-z]:\\[^\s\"'`<>()]+")


def _path_name(path: str) -> str:
    return PureWindowsPath(path).name if re.match(r"[A-Za-z]:\\", path) else Path(path).name


def without_local_paths(value: Any) -> Any:
    """``value`` (a JSON-like structure) with every absolute file path, alone or inside text, reduced to
    its last component, so the model card does not show the server's directory layout."""
    if isinstance(value, dict):
        return {key: without_local_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_local_paths(item) for item in value]
    if isinstance(value, str):
        return _ABSOLUTE_PATH_IN_TEXT.sub(lambda found: _path_name(found.group(0).rstrip("/")), value)
    return value


def create_app(detector: Detector, settings: ServeSettings | None = None) -> FastAPI:
    """A FastAPI app serving ``detector`` under ``settings`` (defaults: no API key, batching on)."""
    settings = settings or ServeSettings()
    runner = ModelRunner(
        detector.score,
        batching=settings.batching,
        max_batch_size=settings.batch_max_size,
        max_wait_ms=settings.batch_max_wait_ms,
    )
    pool = WorkPool(settings.decode_workers, settings.queue_size)
    max_image_bytes = int(settings.max_image_mb * 2**20)
    max_request_bytes = int(settings.max_request_mb * 2**20)
    synthetic = detector.metadata.is_synthetic
    model_info = ModelInfo(name=str(detector.model_card()["name"]), synthetic=synthetic)
    warning = SYNTHETIC_WARNING if synthetic else None
    # JPEG reduction when the checkpoint's transform asks for it (jpeg_draft), as its datasets decode.
    draft_size = detector.preprocessor.transform.draft_size

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await runner.aclose()
        pool.shutdown()

    app = FastAPI(
        title="mfclip",
        version=__version__,
        summary="Detect diffusion-generated and manipulated face images with an MFCLIP detector.",
        lifespan=lifespan,
    )
    # Outermost last: the Host check, then the body limits, then cancellation on disconnect.
    app.add_middleware(CancelOnDisconnect)
    app.add_middleware(BodyLimit, max_bytes=int(settings.max_upload_mb * 2**20), timeout_s=settings.timeout_s)
    if settings.allowed_hosts is not None:
        app.add_middleware(AllowedHosts, allowed_hosts=settings.allowed_hosts)
    app.state.detector = detector
    app.state.settings = settings
    app.state.runner = runner
    app.state.pool = pool

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(ServerBusy)
    async def _busy(_: Request, exc: ServerBusy) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after_s)}
        )

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

    async def within_deadline(work: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(work, timeout=settings.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"request timed out after {settings.timeout_s:g} s") from None

    def open_all(files: list[tuple[bytes, str | None]], session: Session) -> list[OpenedImage | UploadError]:
        """Read every header, then charge the decoded sizes to the request's budget in file order."""
        opened: list[OpenedImage | UploadError] = []
        total = 0
        for data, filename in files:
            if session.interrupt.is_set():
                raise DecodeInterrupted("request gone")
            try:
                image = open_upload(
                    data,
                    filename,
                    max_pixels=settings.max_pixels,
                    max_image_bytes=max_image_bytes,
                    draft_size=draft_size,
                    interrupt=session.interrupt,
                )
            except UploadError as exc:
                opened.append(exc)
                continue
            if total + image.decoded_bytes > max_request_bytes:
                opened.append(
                    UploadError(
                        413,
                        f"{image.name}: its {image.decoded_bytes / 2**20:.1f} MiB decoded would take the "
                        f"request past its limit of {settings.max_request_mb:g} MiB decoded",
                    )
                )
                continue
            total += image.decoded_bytes
            opened.append(image)
        return opened

    def decode(image: OpenedImage, session: Session) -> Any:
        try:
            rgb = image.decode()
        except ImageDecodeError as exc:
            raise UploadError(422, str(exc)) from None
        if session.interrupt.is_set():
            raise DecodeInterrupted(f"{image.name}: request gone")
        return rgb

    def prepare(image: OpenedImage, session: Session) -> tuple[torch.Tensor, list[int] | None]:
        prepared = detector.prepare(decode(image, session))
        return prepared.tensor, (list(prepared.box) if prepared.box is not None else None)

    async def score_one(
        decoding: asyncio.Future[tuple[torch.Tensor, list[int] | None]] | UploadError,
        filename: str | None,
        session: Session,
    ) -> FileResult:
        try:
            if isinstance(decoding, UploadError):
                raise decoding
            tensor, box = await decoding
        except UploadError as exc:
            return FileResult(filename=filename, status=exc.status, error=exc.message)
        p_fake = await runner.submit(tensor, owner=session)
        label = class_name(p_fake, settings.threshold)
        return FileResult(filename=filename, status=200, p_fake=p_fake, label=label, box=box)

    async def score_all(files: list[tuple[bytes, str | None]], session: Session) -> list[FileResult]:
        decodings: list[Any] = []

        def queue_decoding(opened: list[OpenedImage | UploadError]) -> None:
            # Straight after the headers are read, so the request keeps its turn on the pool.
            for image in opened:
                decodings.append(
                    image
                    if isinstance(image, UploadError)
                    else pool.submit(session, prepare, image, session, cost_bytes=image.decoded_bytes)
                )

        try:
            await pool.submit(session, open_all, files, session, then=queue_decoding)
            return list(
                await asyncio.gather(
                    *(score_one(job, name, session) for job, (_, name) in zip(decodings, files, strict=True))
                )
            )
        finally:
            for job in decodings:
                if isinstance(job, asyncio.Future):
                    job.cancel()  # no-op for finished ones; drops the rest when the request stops early

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        page = resources.files("mfclip.serve").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(page)

    @app.get("/healthz", summary="Liveness check")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)

    @app.get("/v1/model", summary="The model card", dependencies=[Depends(require_api_key)])
    async def model_card() -> dict[str, Any]:
        card = without_local_paths(detector.model_card())
        card["synthetic"] = synthetic
        card["warning"] = warning
        card["serving"] = {
            "threshold": settings.threshold,
            "batching": settings.batching,
            "max_upload_mb": settings.max_upload_mb,
            "max_pixels": settings.max_pixels,
            "max_image_mb": settings.max_image_mb,
            "max_request_mb": settings.max_request_mb,
            "max_files": settings.max_files,
            "timeout_s": settings.timeout_s,
        }
        return card

    @app.post(
        "/v1/detect",
        summary="Score one or more images",
        response_model=DetectResponse,
        dependencies=[Depends(require_api_key)],
        responses={
            400: {"description": "every file was empty"},
            408: {"description": "the request body was not received in time"},
            413: {"description": "request or image too large"},
            415: {"description": "no file was a supported image"},
            422: {"description": "no file could be decoded"},
            503: {"description": "the server is busy: retry after the Retry-After header's seconds"},
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
        with pool.session(len(file)) as session:
            files = [(await upload.read(), upload.filename) for upload in file]
            results = await within_deadline(score_all(files, session))
        response = DetectResponse(
            threshold=settings.threshold, model=model_info, warning=warning, results=results
        )
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
        responses={
            200: {"content": {"image/png": {}}},
            **{status: {} for status in (400, 408, 413, 415, 422, 503, 504)},
        },
    )
    async def explain(file: UploadFile = File(..., description="One image file.")) -> Response:
        with pool.session(1) as session:
            data = await file.read()

            async def work() -> Any:
                (opened,) = await pool.run(session, open_all, [(data, file.filename)], session)
                if isinstance(opened, UploadError):
                    raise opened
                image = await pool.run(session, decode, opened, session, cost_bytes=opened.decoded_bytes)
                explanation = await runner.run_in_worker(
                    functools.partial(detector.explain, threshold=settings.threshold), image
                )
                return explanation, await pool.run(session, explanation.to_png)

            try:
                explanation, png = await within_deadline(work())
            except UploadError as exc:
                raise HTTPException(exc.status, exc.message) from None
        headers = {"X-P-Fake": f"{explanation.p_fake:.6f}", "X-Label": explanation.label}
        if warning is not None:
            headers["X-Model-Warning"] = warning
        return Response(png, media_type="image/png", headers=headers)

    return app
