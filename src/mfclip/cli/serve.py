"""``mfclip serve``: an HTTP API and web page around a checkpoint."""

from __future__ import annotations

import typer


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
    port: int = typer.Option(8000, "--port", help="TCP port."),
    api_key: str = typer.Option(
        None,
        "--api-key",
        envvar="MFCLIP_API_KEY",
        help="Require this key on /v1 routes (env MFCLIP_API_KEY).",
    ),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", help="Largest request body, in MiB."),
    max_pixels: int = typer.Option(
        40_000_000, "--max-pixels", help="Largest image (width x height) decoded."
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
    face_detect: str = typer.Option(
        None, "--face-detect", help="Crop the largest face first: mtcnn or haar."
    ),
    device: str = typer.Option("auto", "--device", help="auto (GPU when present), cpu, cuda, ..."),
    dtype: str = typer.Option(None, "--dtype", help="float32 (default), bfloat16 or float16."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve the detector over HTTP: a JSON API, its docs and an upload page.

    Routes: POST /v1/detect, POST /v1/explain, GET /v1/model, GET /healthz, OpenAPI docs at /docs and the
    upload page at /.
    """
    import sys

    import uvicorn

    from mfclip.inference.detector import Detector
    from mfclip.serve.app import ServeSettings, create_app

    settings = ServeSettings(
        api_key=api_key or None,
        max_upload_mb=max_upload_mb,
        max_pixels=max_pixels,
        max_files=max_files,
        timeout_s=timeout,
        threshold=threshold,
        batching=batching,
        batch_max_size=batch_max_size,
        batch_max_wait_ms=batch_max_wait_ms,
    )
    detector = Detector.from_pretrained(
        checkpoint, device=device, dtype=dtype, face_detector=face_detect, max_pixels=max_pixels
    )
    print(f"mfclip serve: {detector.summary()}", file=sys.stderr)
    if api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        print("mfclip serve: warning: listening beyond loopback without an API key", file=sys.stderr)
    uvicorn.run(create_app(detector, settings), host=host, port=port, log_level=log_level)
