"""The HTTP service: every route, every kind of bad upload, the API key, timeouts, and request batching."""

from __future__ import annotations

import asyncio
import io
import struct
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from mfclip import Detector
from mfclip.models.checkpoint import save_checkpoint
from mfclip.models.registry import create_model
from mfclip.serve import ServeSettings, create_app


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


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels (its pixel data is not that big)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(bytes(100))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


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
    ("huge.png", png_header(15000, 15000), "image/png", 413, "huge.png: image is 225000000 pixels"),
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
    assert "0x" not in body["detail"] and "\n" not in body["detail"]  # no object addresses, one line
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
        assert "225000000 pixels, above the limit of 600000" in response.json()["detail"]
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
    assert "no such checkpoint directory" in capsys.readouterr().err
