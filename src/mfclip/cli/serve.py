"""``mfclip serve``: an HTTP API and web page around a checkpoint."""

from __future__ import annotations

import os
from typing import Any

import typer

from mfclip.cli import FACE_DETECT_HELP

API_KEY_ENV = "MFCLIP_API_KEY"

# Settings field -> the command-line option that sets it, for one-line error messages.
_OPTIONS = {
    "api_key": "--api-key",
    "max_upload_mb": "--max-upload-mb",
    "max_pixels": "--max-pixels",
    "max_image_mb": "--max-image-mb",
    "max_request_mb": "--max-request-mb",
    "max_files": "--max-files",
    "timeout_s": "--timeout",
    "threshold": "--threshold",
    "batch_max_size": "--batch-max-size",
    "batch_max_wait_ms": "--batch-max-wait-ms",
    "decode_workers": "--decode-workers",
    "queue_size": "--queue-size",
    "allowed_hosts": "--allowed-hosts",
    "host": "--host",
    "port": "--port",
    "log_level": "--log-level",
    "header_timeout_s": "--header-timeout",
    "keep_alive_s": "--keep-alive",
    "max_connections": "--max-connections",
}


def register(app: typer.Typer) -> None:
    app.command("serve", no_args_is_help=True)(serve_command)


def serve_command(
    checkpoint: str = typer.Option(
        ...,
        "--checkpoint",
        "-c",
        help="Checkpoint directory, or hf-hub:owner/name[@revision] from the Hugging Face Hub.",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for all)."),
    port: int = typer.Option(8000, "--port", help="TCP port (0-65535)."),
    api_key: str = typer.Option(
        None, "--api-key", help=f"Require this key on /v1 routes (or set {API_KEY_ENV}; never empty)."
    ),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", help="Largest request body, in MiB."),
    max_pixels: int = typer.Option(
        40_000_000, "--max-pixels", help="Largest image (width x height) decoded."
    ),
    max_image_mb: float = typer.Option(
        128.0, "--max-image-mb", help="Largest decoded image, in MiB (pixels x bands x bytes per sample)."
    ),
    max_request_mb: float = typer.Option(
        256.0, "--max-request-mb", help="Most decoded MiB of all images of one request."
    ),
    max_files: int = typer.Option(32, "--max-files", help="Most files in one /v1/detect request."),
    timeout: float = typer.Option(
        60.0, "--timeout", help="Seconds to receive a request body (else 408), then to process it (else 504)."
    ),
    threshold: float = typer.Option(
        0.5, "--threshold", help="P(fake) at or above which the label is 'fake'."
    ),
    batching: bool = typer.Option(
        True, "--batching/--no-batching", help="Batch concurrent requests on the model."
    ),
    batch_max_size: int = typer.Option(16, "--batch-max-size", help="Most images per batched forward pass."),
    batch_max_wait_ms: float = typer.Option(
        5.0, "--batch-max-wait-ms", help="Longest wait for a batch to fill."
    ),
    decode_workers: int = typer.Option(2, "--decode-workers", help="Threads decoding and resizing uploads."),
    queue_size: int = typer.Option(
        128, "--queue-size", help="Most images in flight server-wide; beyond, 503 with Retry-After."
    ),
    allowed_hosts: list[str] = typer.Option(
        None,
        "--allowed-hosts",
        help="Accept only these Host headers (comma-separated or repeated; '*.example.com' allowed).",
    ),
    header_timeout: float = typer.Option(
        10.0, "--header-timeout", help="Seconds a connection has to send a request's headers."
    ),
    keep_alive: int = typer.Option(
        5, "--keep-alive", help="Seconds an idle keep-alive connection stays open."
    ),
    max_connections: int = typer.Option(
        256, "--max-connections", help="Connections at once; requests beyond get 503."
    ),
    face_detect: str = typer.Option(
        "auto",
        "--face-detect",
        help=FACE_DETECT_HELP,
    ),
    device: str = typer.Option("auto", "--device", help="auto (GPU when present), cpu, cuda, ..."),
    dtype: str = typer.Option(None, "--dtype", help="float32 (default), bfloat16 or float16."),
    log_level: str = typer.Option(
        "info", "--log-level", help="critical, error, warning, info, debug or trace."
    ),
) -> None:
    """Serve the detector over HTTP: a JSON API, its docs and an upload page.

    Routes: POST /v1/detect, POST /v1/explain, GET /v1/model, GET /healthz, OpenAPI docs at /docs and the
    upload page at /.
    """
    import sys

    from mfclip.serve.settings import ListenSettings, ServeSettings

    if api_key is None and API_KEY_ENV in os.environ:
        api_key = os.environ[API_KEY_ENV]  # read here: an empty variable must be refused, not ignored
    hosts = [h for item in allowed_hosts or [] for h in item.split(",")] if allowed_hosts else None
    serve_settings = _validated(
        ServeSettings,
        api_key=api_key,
        max_upload_mb=max_upload_mb,
        max_pixels=max_pixels,
        max_image_mb=max_image_mb,
        max_request_mb=max_request_mb,
        max_files=max_files,
        timeout_s=timeout,
        threshold=threshold,
        batching=batching,
        batch_max_size=batch_max_size,
        batch_max_wait_ms=batch_max_wait_ms,
        decode_workers=decode_workers,
        queue_size=queue_size,
        allowed_hosts=hosts,
    )
    listen = _validated(
        ListenSettings,
        host=host,
        port=port,
        log_level=log_level,
        header_timeout_s=header_timeout,
        keep_alive_s=keep_alive,
        max_connections=max_connections,
    )

    from mfclip.inference.detector import Detector
    from mfclip.serve import create_app, run_server

    detector = Detector.from_pretrained(
        checkpoint, device=device, dtype=dtype, face_detector=face_detect, max_pixels=max_pixels
    )
    print(f"mfclip serve: {detector.summary()}", file=sys.stderr)
    if serve_settings.api_key is None and not listen.loopback:
        print("mfclip serve: warning: listening beyond loopback without an API key", file=sys.stderr)
    run_server(create_app(detector, serve_settings), listen)


def _validated(config: Any, **values: Any) -> Any:
    """``config(**values)``, or a ValueError naming the first bad option on one line."""
    from pydantic import ValidationError

    try:
        return config(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        message = message[:1].lower() + message[1:]
        if field in _OPTIONS:
            shown = "" if field == "api_key" else f" {values[field]}"
            raise ValueError(f"{_OPTIONS[field]}{shown}: {message}") from None
        raise ValueError(message) from None
