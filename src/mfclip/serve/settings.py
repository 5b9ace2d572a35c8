"""The service's settings: what one app accepts (:class:`ServeSettings`) and how it listens
(:class:`ListenSettings`). Both are validated before any model is loaded."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mfclip.utils.config import StrictConfig

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]


class ServeSettings(StrictConfig):
    """Limits, authentication and batching of the HTTP service."""

    api_key: str | None = Field(None, description="When set, /v1 routes need it (X-API-Key or Bearer).")
    max_upload_mb: float = Field(20.0, gt=0, description="Largest request body, in MiB.")
    max_pixels: int = Field(40_000_000, gt=0, description="Largest image (width x height) decoded.")
    max_image_mb: float = Field(
        128.0, gt=0, description="Largest decoded image, in MiB (pixels x bands x bytes per sample)."
    )
    max_request_mb: float = Field(256.0, gt=0, description="Most decoded MiB of all images of one request.")
    max_files: int = Field(32, ge=1, description="Most files in one /v1/detect request.")
    timeout_s: float = Field(
        60.0, gt=0, description="Seconds to receive a request body (else 408), then to process it (else 504)."
    )
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="P(fake) at or above which label is fake.")
    batching: bool = Field(True, description="Batch concurrent requests on the model.")
    batch_max_size: int = Field(16, ge=1, description="Most images in one batched forward pass.")
    batch_max_wait_ms: float = Field(5.0, ge=0, description="Longest wait for a batch to fill, in ms.")
    decode_workers: int = Field(2, ge=1, description="Threads decoding and resizing uploads.")
    queue_size: int = Field(
        128, ge=1, description="Most images in flight server-wide; a request beyond gets 503 + Retry-After."
    )
    allowed_hosts: list[str] | None = Field(
        None, description="Host header values accepted ('*.example.com' allowed); None accepts any."
    )

    @field_validator("api_key")
    @classmethod
    def _usable_key(cls, key: str | None) -> str | None:
        if key is None:
            return None
        if key == "":
            raise ValueError("the API key is empty; leave it unset to serve without one")
        if not key.isascii() or not key.isprintable():
            raise ValueError("the API key must be printable ASCII: HTTP headers cannot carry this one")
        if key != key.strip():
            raise ValueError("the API key starts or ends with whitespace, which HTTP strips from headers")
        return key

    @field_validator("allowed_hosts")
    @classmethod
    def _usable_hosts(cls, hosts: list[str] | None) -> list[str] | None:
        if hosts is None:
            return None
        cleaned = [host.strip() for host in hosts if host.strip()]
        if not cleaned:
            raise ValueError("no host given; leave it unset to accept any Host header")
        for host in cleaned:
            if "/" in host or " " in host:
                raise ValueError(
                    f"{host!r} is not a host name (give names like example.com or *.example.com)"
                )
        return cleaned

    @model_validator(mode="after")
    def _queue_holds_a_request(self) -> ServeSettings:
        if self.queue_size < self.max_files:
            raise ValueError(
                f"queue_size ({self.queue_size}) must be at least max_files ({self.max_files}): "
                "a full request would never fit"
            )
        return self


class ListenSettings(StrictConfig):
    """Where the HTTP server listens and how it treats connections."""

    host: str = Field("127.0.0.1", min_length=1, description="Interface to listen on (0.0.0.0 for all).")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one).")
    log_level: LogLevel = Field("info", description="uvicorn's log level.")
    header_timeout_s: float = Field(
        10.0, gt=0, description="Seconds a connection has to send a request's headers; then it is closed."
    )
    keep_alive_s: int = Field(5, ge=1, description="Seconds an idle keep-alive connection stays open.")
    max_connections: int = Field(
        256, ge=1, description="Connections (and requests) at once; requests beyond get 503."
    )

    @property
    def loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1")
