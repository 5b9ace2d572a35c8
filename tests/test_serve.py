"""The HTTP service: every route, every kind of bad upload, the API key, timeouts, request batching, and
the limits that keep one client from exhausting it (decoded sizes, deadlines, fair queues, header timeout)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from data_trees import png_header
from mfclip import Detector
from mfclip.models.checkpoint import save_checkpoint
from mfclip.models.registry import create_model
from mfclip.serve import ListenSettings, ServeSettings, create_app


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Detector:
    torch.manual_seed(0)
    directory = save_checkpoint(
        create_model("mfclip-tiny"), tmp_path_factory.mktemp("serve") / "tiny", {"name": "serve-test"}
    )
    return Detector.from_pretrained(directory, device="cpu")


def png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photos(astronaut_rgb: np.ndarray, grace_hopper_path: Path) -> list[bytes]:
    crops = [astronaut_rgb[:300, 100:400], astronaut_rgb[200:, :], astronaut_rgb[::2, ::2]]
    return [png_bytes(crop) for crop in crops] + [grace_hopper_path.read_bytes()]


@pytest.fixture(scope="module")
def client(detector: Detector):
    with TestClient(create_app(detector, ServeSettings(max_upload_mb=1, max_pixels=600_000))) as test_client:
        yield test_client


def upload(*files: tuple[str, bytes, str]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", file) for file in files]


def test_health_index_docs_and_model_card(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="file"' in page.text and "/v1/detect" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no external CDN
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/detect", "/v1/explain", "/v1/model", "/healthz"} <= set(paths)
    card = client.get("/v1/model").json()
    assert card["name"] == "serve-test" and card["preset"] == "mfclip-tiny" and card["image_size"] == 64
    assert card["metadata"]["name"] == "serve-test"
    assert card["format"] == "mfclip-checkpoint" and "mfclip-tiny" in card["card"]
    assert card["serving"]["max_pixels"] == 600_000


def test_detect_matches_the_python_api(client: TestClient, detector: Detector, photos: list[bytes]) -> None:
    response = client.post("/v1/detect", files=upload(("a.png", photos[0], "image/png")))
    assert response.status_code == 200
    (result,) = response.json()["results"]
    expected = detector.predict(Image.open(io.BytesIO(photos[0])))
    assert result["filename"] == "a.png" and result["status"] == 200
    assert result["p_fake"] == pytest.approx(expected.p_fake, abs=1e-6)
    assert result["label"] == expected.label and result["error"] is None


def test_several_files_with_per_file_errors(client: TestClient, photos: list[bytes]) -> None:
    files = upload(
        ("good.png", photos[0], "image/png"),
        ("empty.png", b"", "image/png"),
        ("notes.txt", b"just some text", "text/plain"),
        ("portrait.jpg", photos[3], "image/jpeg"),
    )
    response = client.post("/v1/detect", files=files)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [200, 400, 415, 200]
    assert 0.0 <= results[0]["p_fake"] <= 1.0 and 0.0 <= results[3]["p_fake"] <= 1.0
    assert "empty" in results[1]["error"] and results[1]["p_fake"] is None
    assert "not a supported image" in results[2]["error"] and "text" in results[2]["error"]


NOISE_PNG = png_bytes(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))


BAD_UPLOADS = [
    ("zero.png", b"", "image/png", 400, "zero.png: empty file"),
    ("doc.png", b"%PDF-1.7 this is a pdf", "image/png", 415, "doc.png: not a supported image"),
    ("clip.jpg", b"\x00\x00\x00\x18ftypmp42" + bytes(64), "image/jpeg", 415, "MP4/MOV video"),
    ("page.html", b"<!DOCTYPE html><html></html>", "text/html", 415, "HTML document"),
    ("notes.jpg", b"just some text", "image/jpeg", 415, "content looks like text"),
    ("cut.png", NOISE_PNG[:2000], "image/png", 422, "cut.png: corrupt or truncated image"),
    ("fake.gif", b"GIF89a-not-really", "image/gif", 422, "fake.gif: not a decodable GIF image"),
    ("fake.bmp", b"BM" + bytes(10), "image/bmp", 422, "fake.bmp: not a decodable BMP image"),
    (
        "huge.png",
        png_header(15000, 15000),
        "image/png",
        413,
        "huge.png: image is 15000x15000 = 225000000 pixels",
    ),
    ("big.png", b"\x89PNG\r\n\x1a\n" + bytes(2 * 2**20), "image/png", 413, "upload limit of 1 MiB"),
]


@pytest.mark.parametrize("route", ["/v1/detect", "/v1/explain"])
@pytest.mark.parametrize(
    ("name", "content", "declared", "status", "message"), BAD_UPLOADS, ids=[case[0] for case in BAD_UPLOADS]
)
def test_bad_single_uploads_get_clear_4xx(
    client: TestClient, route: str, name: str, content: bytes, declared: str, status: int, message: str
) -> None:
    response = client.post(route, files=upload((name, content, declared)))
    assert response.status_code == status
    body = response.json()
    assert message in body["detail"]
    assert not re.search(r"at 0x[0-9a-fA-F]+", body["detail"])  # no object addresses
    assert "\n" not in body["detail"]  # one line
    if route == "/v1/detect" and "results" in body:
        assert body["results"][0]["status"] == status
    assert client.get("/healthz").status_code == 200  # still serving


def test_truncated_image_is_422(client: TestClient, photos: list[bytes]) -> None:
    response = client.post("/v1/detect", files=upload(("cut.png", photos[0][:2000], "image/png")))
    assert response.status_code == 422
    assert "truncated" in response.json()["detail"] or "corrupt" in response.json()["detail"]


def test_content_is_sniffed_not_the_name_or_declared_type(client: TestClient, photos: list[bytes]) -> None:
    response = client.post("/v1/detect", files=upload(("photo.txt", photos[0], "text/plain")))
    assert response.status_code == 200 and response.json()["results"][0]["p_fake"] is not None
    response = client.post("/v1/explain", files=upload(("fake.png", b"GIF89a-not-really", "image/png")))
    assert response.status_code == 422


def test_size_and_pixel_limits_are_413(client: TestClient) -> None:
    big_body = bytes(2 * 1024 * 1024)  # above max_upload_mb = 1
    response = client.post(
        "/v1/detect", files=upload(("big.png", b"\x89PNG\r\n\x1a\n" + big_body, "image/png"))
    )
    assert response.status_code == 413 and "1 MiB" in response.json()["detail"]
    # A small file that decodes to more pixels than allowed (a decompression bomb in miniature).
    bomb = png_bytes(np.zeros((1000, 1000, 3), dtype=np.uint8))
    assert len(bomb) < 100_000
    response = client.post("/v1/detect", files=upload(("bomb.png", bomb, "image/png")))
    assert response.status_code == 413 and "1000000 pixels" in response.json()["detail"]
    response = client.post("/v1/explain", files=upload(("bomb.png", bomb, "image/png")))
    assert response.status_code == 413
    # A header beyond PIL's own decompression-bomb limit (~179 MP) is the same pixel-limit refusal.
    huge = png_header(15000, 15000)
    for route in ("/v1/detect", "/v1/explain"):
        response = client.post(route, files=upload(("huge.png", huge, "image/png")))
        assert response.status_code == 413
        assert "225000000 pixels, above the limit 600000" in response.json()["detail"]
    assert client.get("/healthz").status_code == 200  # still serving


def test_streamed_body_without_length_is_cut_at_the_limit(client: TestClient) -> None:
    boundary = "mfclipboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()

    def chunks():
        yield head
        for _ in range(40):  # 40 x 64 KiB = 2.5 MiB, above the 1 MiB limit; sent without Content-Length
            yield bytes(64 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    response = client.post("/v1/detect", content=chunks(), headers=headers)
    assert response.status_code == 413 and "upload limit" in response.json()["detail"]


def test_missing_file_field_and_too_many_files(detector: Detector, photos: list[bytes]) -> None:
    with TestClient(create_app(detector, ServeSettings(max_files=2))) as client:
        assert client.post("/v1/detect", data={"other": "x"}).status_code == 422
        files = upload(*[(f"{i}.png", photos[0], "image/png") for i in range(3)])
        response = client.post("/v1/detect", files=files)
        assert response.status_code == 413 and "too many files" in response.json()["detail"]


def test_explain_returns_a_png_panel(client: TestClient, photos: list[bytes]) -> None:
    response = client.post("/v1/explain", files=upload(("a.png", photos[0], "image/png")))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    panel = Image.open(io.BytesIO(response.content))
    assert panel.width > 400 and panel.height > 200
    assert 0.0 <= float(response.headers["x-p-fake"]) <= 1.0
    assert response.headers["x-label"] in ("real", "fake")


def test_api_key(detector: Detector, photos: list[bytes]) -> None:
    with TestClient(create_app(detector, ServeSettings(api_key="s3cret"))) as client:
        files = upload(("a.png", photos[0], "image/png"))
        missing = client.post("/v1/detect", files=files)
        assert missing.status_code == 401 and "missing API key" in missing.json()["detail"]
        wrong = client.post("/v1/detect", files=files, headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401 and "invalid API key" in wrong.json()["detail"]
        assert client.get("/v1/model").status_code == 401
        explain = client.post("/v1/explain", files=files)
        assert explain.status_code == 401 and "missing API key" in explain.json()["detail"]
        assert explain.headers["www-authenticate"] == "Bearer"
        wrong = client.post("/v1/explain", files=files, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "invalid API key" in wrong.json()["detail"]
        assert client.post("/v1/explain", files=files, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.post("/v1/detect", files=files, headers={"X-API-Key": "s3cret"}).status_code == 200
        bearer = {"Authorization": "Bearer s3cret"}
        assert client.post("/v1/detect", files=files, headers=bearer).status_code == 200
        assert client.get("/v1/model", headers=bearer).status_code == 200
        assert client.get("/healthz").status_code == 200  # liveness needs no key


def test_timeout_is_504(detector: Detector, photos: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    score = detector.score

    def slow_score(images: torch.Tensor) -> torch.Tensor:
        time.sleep(1.5)
        return score(images)

    monkeypatch.setattr(detector, "score", slow_score)
    with TestClient(create_app(detector, ServeSettings(timeout_s=0.5))) as client:
        response = client.post("/v1/detect", files=upload(("a.png", photos[0], "image/png")))
        assert response.status_code == 504 and "timed out after 0.5 s" in response.json()["detail"]


def test_body_not_received_in_time_is_408(detector: Detector, photos: list[bytes]) -> None:
    app = create_app(detector, ServeSettings(timeout_s=0.5))
    boundary = "mfclipboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="slow.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()

    async def slow_body():
        yield head + photos[0][:1000]
        await asyncio.sleep(5)  # a client that stalls mid-upload
        yield photos[0][1000:] + f"\r\n--{boundary}--\r\n".encode()

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
            return await http.post("/v1/detect", content=slow_body(), headers=headers)

    started = time.monotonic()
    response = asyncio.run(run())
    assert response.status_code == 408 and "not received within 0.5 s" in response.json()["detail"]
    assert time.monotonic() - started < 4


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_explain_uses_the_server_threshold(
    detector: Detector, photos: list[bytes], monkeypatch: pytest.MonkeyPatch, threshold: float
) -> None:
    explain = detector.explain
    panel_labels: list[str] = []

    def recording_explain(image, threshold: float = 0.5):  # type: ignore[no-untyped-def]
        explanation = explain(image, threshold=threshold)
        panel_labels.append(explanation.label)
        return explanation

    monkeypatch.setattr(detector, "explain", recording_explain)
    with TestClient(create_app(detector, ServeSettings(threshold=threshold))) as client:
        response = client.post("/v1/explain", files=upload(("a.png", photos[0], "image/png")))
    assert response.status_code == 200
    p_fake = float(response.headers["x-p-fake"])
    expected = "fake" if p_fake >= threshold else "real"
    assert panel_labels == [expected] and response.headers["x-label"] == expected


@pytest.mark.parametrize("batching", [True, False])
def test_concurrent_requests_score_as_single_ones(
    detector: Detector, photos: list[bytes], batching: bool
) -> None:
    expected = [p.p_fake for p in detector.predict([Image.open(io.BytesIO(b)) for b in photos])]
    settings = ServeSettings(batching=batching, batch_max_size=8, batch_max_wait_ms=200)
    app = create_app(detector, settings)

    async def run() -> list[float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:

            async def one(index: int) -> float:
                data = photos[index % len(photos)]
                response = await http.post("/v1/detect", files=upload((f"{index}.png", data, "image/png")))
                assert response.status_code == 200
                return response.json()["results"][0]["p_fake"]

            return await asyncio.gather(*(one(i) for i in range(12)))

    scores = asyncio.run(run())
    assert scores == pytest.approx([expected[i % len(photos)] for i in range(12)], abs=1e-5)
    sizes = app.state.runner.batch_sizes
    assert sum(sizes) == 12
    if batching:
        assert max(sizes) > 1 and max(sizes) <= 8
    else:
        assert set(sizes) == {1}


def test_serve_cli_reports_a_bad_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mfclip.cli.errors import run_app
    from mfclip.cli.main import app

    assert run_app(app, ["serve", "--checkpoint", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------
# Decoded-size budgets, deadlines that stop work, fair and bounded queues


def grey16_png(side: int) -> bytes:
    """A 16-bit grey PNG of ``side`` x ``side`` pixels that compresses to a few hundred KB at most."""
    values = np.zeros((side, side), dtype=np.uint16)
    values[::7, ::5] = 40000
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    return buffer.getvalue()


def test_16_bit_bomb_sized_request_is_bounded(detector: Detector) -> None:
    # 8 images of 6300 x 6300 16-bit grey: under the 40 MP limit, 76 MiB each decoded, ~90 KB each sent.
    bomb = grey16_png(6300)
    assert len(bomb) < 100_000
    app = create_app(detector, ServeSettings())
    with TestClient(app) as client:
        response = client.post(
            "/v1/detect", files=upload(*[(f"{i}.png", bomb, "image/png") for i in range(8)])
        )
    assert response.status_code == 200
    results = response.json()["results"]
    # The default 256 MiB per request decodes three of them; the other five are refused unread.
    assert [r["status"] for r in results] == [200] * 3 + [413] * 5
    assert "75.7 MiB decoded would take the request past its limit of 256 MiB" in results[3]["error"]
    assert app.state.pool.jobs_run == 1 + 3  # one job reading the headers, three decoding


def test_decoded_size_limits_per_image_and_per_request(detector: Detector) -> None:
    small, large = grey16_png(1400), grey16_png(2100)  # 3.7 and 8.4 MiB decoded
    settings = ServeSettings(max_image_mb=8, max_request_mb=8)
    with TestClient(create_app(detector, settings)) as client:
        files = upload(
            ("a.png", small, "image/png"), ("b.png", large, "image/png"), ("c.png", small, "image/png")
        )
        results = client.post("/v1/detect", files=files).json()["results"]
        assert [r["status"] for r in results] == [200, 413, 200]
        assert (
            "b.png: image is 2100x2100 I;16, 8.4 MiB decoded, above the limit of 8 MiB" in results[1]["error"]
        )
        files = upload(*[(f"{i}.png", small, "image/png") for i in range(3)])
        assert [r["status"] for r in client.post("/v1/detect", files=files).json()["results"]] == [
            200,
            200,
            413,
        ]
        only = client.post("/v1/explain", files=upload(("b.png", large, "image/png")))
        assert only.status_code == 413 and "8.4 MiB decoded" in only.json()["detail"]


class Gate:
    """Wraps ``detector.prepare``: records each call's image size, and holds the first call until released."""

    def __init__(self, detector: Detector) -> None:
        self.prepare = detector.prepare
        self.sizes: list[tuple[int, int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, image: Image.Image) -> object:
        self.sizes.append(image.size)
        if len(self.sizes) == 1:
            self.entered.set()
            self.release.wait(10)
        return self.prepare(image)


def test_timed_out_request_stops_and_does_not_hold_up_the_next(
    detector: Detector, photos: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(detector)
    monkeypatch.setattr(detector, "prepare", gate)
    with TestClient(create_app(detector, ServeSettings(timeout_s=0.5, decode_workers=1))) as client:
        files = upload(*[(f"{i}.png", photos[0], "image/png") for i in range(6)])
        response = client.post("/v1/detect", files=files)
        assert response.status_code == 504
        gate.release.set()
        following = client.post("/v1/detect", files=upload(("next.png", photos[2], "image/png")))
        assert following.status_code == 200
    # The timed-out request's five other images were never prepared: nothing ran ahead of the next one.
    assert gate.sizes == [(300, 300), (256, 256)]


def multipart(*files: tuple[str, bytes, str]) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://test/v1/detect", files=upload(*files))
    return request.read(), request.headers["content-type"]


def test_disconnected_client_stops_its_work(
    detector: Detector, photos: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(detector)
    monkeypatch.setattr(detector, "prepare", gate)
    app = create_app(detector, ServeSettings(decode_workers=1))
    body, content_type = multipart(*[(f"{i}.png", photos[0], "image/png") for i in range(4)])
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/detect",
        "raw_path": b"/v1/detect",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), (b"content-type", content_type.encode())],
        "client": ("127.0.0.1", 40000),
        "server": ("test", 80),
    }
    sent: list[dict] = []

    async def run() -> None:
        gone = asyncio.Event()
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:
            if messages:
                return messages.pop()
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        handler = asyncio.ensure_future(app(scope, receive, send))
        assert await asyncio.to_thread(gate.entered.wait, 10)
        gone.set()  # the client leaves while its first image is being prepared
        await asyncio.wait_for(handler, 5)
        pool = app.state.pool
        assert pool.in_flight == 0 and pool.waiting == 0
        gate.release.set()
        while pool.running:
            await asyncio.sleep(0.01)

    asyncio.run(run())
    assert sent == []  # nobody to answer
    assert gate.sizes == [(300, 300)]  # the three other images were never prepared
    assert app.state.runner.batch_sizes == []  # and nothing reached the model


def test_a_large_request_does_not_push_a_small_one_behind_all_its_files(
    detector: Detector, photos: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(detector)
    monkeypatch.setattr(detector, "prepare", gate)
    app = create_app(detector, ServeSettings(decode_workers=1))
    pool = app.state.pool

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as http:
            many = upload(*[(f"{i}.png", photos[0], "image/png") for i in range(6)])
            large = asyncio.ensure_future(http.post("/v1/detect", files=many))
            assert await asyncio.to_thread(gate.entered.wait, 10)
            small = asyncio.ensure_future(
                http.post("/v1/detect", files=upload(("one.png", photos[2], "image/png")))
            )
            while pool.waiting < 6:  # the large request's five images and the small one's header read
                await asyncio.sleep(0.01)
            gate.release.set()
            return [(await large).status_code, (await small).status_code]

    assert asyncio.run(run()) == [200, 200]
    assert gate.sizes[:2] == [(300, 300), (256, 256)] and len(gate.sizes) == 7


def test_full_queue_is_503_with_retry_after(
    detector: Detector, photos: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(detector)
    monkeypatch.setattr(detector, "prepare", gate)
    app = create_app(detector, ServeSettings(queue_size=4, max_files=4, decode_workers=1))

    async def run() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as http:
            four = upload(*[(f"{i}.png", photos[0], "image/png") for i in range(4)])
            first = asyncio.ensure_future(http.post("/v1/detect", files=four))
            assert await asyncio.to_thread(gate.entered.wait, 10)
            one = upload(("one.png", photos[2], "image/png"))
            refused = await http.post("/v1/detect", files=one)
            gate.release.set()
            return await first, refused, await http.post("/v1/detect", files=one)

    first, refused, retried = asyncio.run(run())
    assert first.status_code == 200 and retried.status_code == 200
    assert refused.status_code == 503 and "server busy: 4 images in flight" in refused.json()["detail"]
    assert int(refused.headers["retry-after"]) >= 1


def test_batches_take_images_from_every_request_in_turn() -> None:
    from mfclip.serve.batching import ModelRunner

    seen: list[list[float]] = []

    def score(images: torch.Tensor) -> torch.Tensor:
        seen.append(images[:, 0, 0, 0].tolist())
        return images[:, 0, 0, 0]

    runner = ModelRunner(score, max_batch_size=4, max_wait_ms=50)

    async def run() -> list[float]:
        many = [runner.submit(torch.full((3, 2, 2), 0.25), owner="large") for _ in range(8)]
        one = runner.submit(torch.full((3, 2, 2), 0.75), owner="small")
        scores = await asyncio.gather(*many, one)
        await runner.aclose()
        return scores

    assert asyncio.run(run())[-1] == 0.75
    assert 0.75 in seen[0] and runner.batch_sizes == [4, 4, 1]


# ------------------------------------------------------------------------------------------------------
# API key, hosts, model card, health, synthetic models


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "the API key is empty"),
        ("clé-secrète", "must be printable ASCII"),
        (" s3cret", "starts or ends with whitespace"),
    ],
)
def test_unusable_api_keys_are_refused(key: str, message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        ServeSettings(api_key=key)


def test_allowed_hosts(detector: Detector) -> None:
    settings = ServeSettings(allowed_hosts=["mfclip.example.org", "*.mfclip.example.org"])
    with TestClient(create_app(detector, settings)) as client:
        assert client.get("/v1/model").status_code == 400  # Host: testserver
        assert client.get("/v1/model", headers={"Host": "mfclip.example.org"}).status_code == 200
        assert client.get("/v1/model", headers={"Host": "api.mfclip.example.org"}).status_code == 200
        assert client.get("/healthz").status_code == 200  # probes address the server by IP
    with pytest.raises(ValueError, match="not a host name"):
        ServeSettings(allowed_hosts=["http://mfclip.example.org/"])


def test_head_healthz_and_no_local_paths_in_the_model_card(tmp_path: Path, detector: Detector) -> None:
    directory = save_checkpoint(
        detector.model,
        tmp_path / "deep" / "inside" / "run-7",
        {
            "name": "paths",
            "run_dir": str(tmp_path / "runs" / "run-7"),
            "train_manifest": str(tmp_path / "m.csv"),
        },
    )
    with TestClient(create_app(Detector.from_pretrained(directory, device="cpu"))) as client:
        head = client.head("/healthz")
        assert head.status_code == 200 and head.content == b""
        card = client.get("/v1/model")
    assert card.json()["checkpoint"] == "run-7" and card.json()["metadata"]["run_dir"] == "run-7"
    assert card.json()["metadata"]["train_manifest"] == "m.csv"
    assert str(tmp_path) not in card.text


def test_synthetic_model_says_so_in_every_answer(
    tmp_path: Path, detector: Detector, photos: list[bytes]
) -> None:
    directory = save_checkpoint(detector.model, tmp_path / "synthetic", {"name": "demo", "synthetic": True})
    with TestClient(create_app(Detector.from_pretrained(directory, device="cpu"))) as client:
        answer = client.post("/v1/detect", files=upload(("a.png", photos[0], "image/png"))).json()
        assert answer["model"] == {"name": "demo", "synthetic": True}
        assert "SYNTHETIC" in answer["warning"] and "not evidence" in answer["warning"]
        refused = client.post("/v1/detect", files=upload(("e.png", b"", "image/png"))).json()
        assert "SYNTHETIC" in refused["warning"]
        card = client.get("/v1/model").json()
        assert card["synthetic"] is True and "SYNTHETIC" in card["warning"]
        explained = client.post("/v1/explain", files=upload(("a.png", photos[0], "image/png")))
        assert "SYNTHETIC" in explained.headers["x-model-warning"]
    with TestClient(create_app(detector)) as client:
        answer = client.post("/v1/detect", files=upload(("a.png", photos[0], "image/png"))).json()
        assert answer["model"]["synthetic"] is False and answer["warning"] is None


# ------------------------------------------------------------------------------------------------------
# The HTTP server: header timeout and connection cap (a real uvicorn on a free port)


@contextlib.contextmanager
def running_server(detector: Detector, listen: ListenSettings) -> Iterator[int]:
    import uvicorn

    from mfclip.serve.server import uvicorn_config

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    listen = listen.model_copy(update={"port": port, "log_level": "warning"})
    server = uvicorn.Server(uvicorn_config(create_app(detector), listen))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def read_until_closed(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (fails after 10 s of silence)."""
    connection.settimeout(10)
    received = b""
    while chunk := connection.recv(4096):
        received += chunk
    return received


def test_connections_that_never_finish_their_headers_are_closed(detector: Detector) -> None:
    with running_server(detector, ListenSettings(header_timeout_s=0.5)) as port:
        with socket.create_connection(("127.0.0.1", port)) as partial:
            partial.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart")
            answer = read_until_closed(partial)
        assert answer.startswith(b"HTTP/1.1 408") and b"request headers not received within 0.5 s" in answer
        with socket.create_connection(("127.0.0.1", port)) as silent:
            assert read_until_closed(silent).startswith(b"HTTP/1.1 408")
        with socket.create_connection(("127.0.0.1", port)) as reused:
            # A complete request is answered; the next one, left unfinished on the same connection, is not.
            reused.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /healthz HTTP/1.1\r\n")
            answer = read_until_closed(reused)
        assert answer.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 408" in answer
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}


def test_connections_beyond_the_cap_get_503(detector: Detector) -> None:
    with running_server(detector, ListenSettings(max_connections=3, header_timeout_s=30)) as port:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            time.sleep(0.2)  # let the server accept them
            assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 503
        finally:
            for connection in idle:
                connection.close()
        time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200


# ------------------------------------------------------------------------------------------------------
# The command line: every setting validated before the model loads


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--port", "99999"], "--port 99999: input should be less than or equal to 65535"),
        (["--max-upload-mb", "0"], "--max-upload-mb 0.0: input should be greater than 0"),
        (["--threshold", "7"], "--threshold 7.0: input should be less than or equal to 1"),
        (["--log-level", "loud"], "--log-level loud: input should be 'critical', 'error', 'warning'"),
        (["--api-key", ""], "--api-key: the API key is empty"),
        (["--api-key", "clé"], "--api-key: the API key must be printable ASCII"),
    ],
)
def test_serve_cli_refuses_bad_settings_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    from mfclip.cli.errors import run_app
    from mfclip.cli.main import app

    assert run_app(app, ["serve", "--checkpoint", str(tmp_path / "missing"), *options]) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("mfclip: error:")]
    assert message in line and "checkpoint" not in err and "Traceback" not in err


def test_serve_cli_refuses_an_empty_key_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mfclip.cli.errors import run_app
    from mfclip.cli.main import app

    monkeypatch.setenv("MFCLIP_API_KEY", "")
    assert run_app(app, ["serve", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "--api-key: the API key is empty" in capsys.readouterr().err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priorities are Linux's")
def test_large_decodes_run_at_a_lower_cpu_priority() -> None:
    from mfclip.serve.scheduling import LARGE_JOB_NICENESS, WorkPool

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    pool = WorkPool(2, 4, large_job_bytes=1000)

    async def run() -> tuple[int, int]:
        with pool.session(2) as session:
            large = await pool.run(session, niceness, cost_bytes=10_000)
            small = await pool.run(session, niceness, cost_bytes=10)
        return large, small

    large, small = asyncio.run(run())
    pool.shutdown()
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert small == base and large == min(base + LARGE_JOB_NICENESS, 19)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_the_server_process_returns_freed_image_memory() -> None:
    from mfclip.serve.server import return_freed_memory_to_the_system

    assert return_freed_memory_to_the_system()
