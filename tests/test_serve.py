"""The HTTP service: every route, every kind of bad upload, the API key, timeouts, and request batching."""

from __future__ import annotations

import asyncio
import io
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


@pytest.mark.parametrize(
    ("name", "content", "declared", "status", "message"),
    [
        ("zero.png", b"", "image/png", 400, "empty file"),
        ("doc.png", b"%PDF-1.7 this is a pdf", "image/png", 415, "PDF document"),
        ("clip.jpg", b"\x00\x00\x00\x18ftypmp42" + bytes(64), "image/jpeg", 415, "MP4/MOV video"),
        ("page.html", b"<!DOCTYPE html><html></html>", "text/html", 415, "HTML document"),
    ],
)
def test_bad_single_uploads_get_clear_4xx(
    client: TestClient, name: str, content: bytes, declared: str, status: int, message: str
) -> None:
    response = client.post("/v1/detect", files=upload((name, content, declared)))
    assert response.status_code == status
    body = response.json()
    assert message in body["detail"] and name in body["detail"]
    assert body["results"][0]["status"] == status


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
        assert client.post("/v1/detect", files=files, headers={"X-API-Key": "s3cret"}).status_code == 200
        bearer = {"Authorization": "Bearer s3cret"}
        assert client.post("/v1/detect", files=files, headers=bearer).status_code == 200
        assert client.get("/v1/model", headers=bearer).status_code == 200
        assert client.get("/healthz").status_code == 200  # liveness needs no key


def test_timeout_is_504(detector: Detector, photos: list[bytes]) -> None:
    with TestClient(create_app(detector, ServeSettings(timeout_s=1e-4))) as client:
        response = client.post("/v1/detect", files=upload(("a.png", photos[0], "image/png")))
        assert response.status_code == 504 and "timed out" in response.json()["detail"]


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
