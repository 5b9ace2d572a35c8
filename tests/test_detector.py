"""The Python API: Detector.from_pretrained, predict on every input type, videos, faces, model card."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mfclip import Detector
from mfclip.data.decode import ImageDecodeError
from mfclip.data.transforms import ImageTransform
from mfclip.data.video import VideoDecodeError
from mfclip.inference import Prediction, VideoPrediction
from mfclip.models.checkpoint import CheckpointError, save_checkpoint
from mfclip.models.registry import create_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    metadata = {"name": "detector-test", "protocol": "cross-generator", "synthetic": True}
    return save_checkpoint(create_model("mfclip-tiny"), tmp_path_factory.mktemp("det") / "tiny", metadata)


@pytest.fixture(scope="module")
def detector(checkpoint: Path) -> Detector:
    return Detector.from_pretrained(checkpoint, device="cpu", batch_size=4)


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_every_input_type_gives_the_same_score(
    detector: Detector, astronaut_rgb: np.ndarray, astronaut_path: Path
) -> None:
    from_path = detector.predict(astronaut_path)
    assert isinstance(from_path, Prediction)
    assert from_path.path == str(astronaut_path) and from_path.box is None
    assert 0.0 <= from_path.p_fake <= 1.0
    chw = torch.from_numpy(astronaut_rgb).permute(2, 0, 1)
    others = detector.predict(
        [
            Image.open(astronaut_path),
            astronaut_rgb,
            chw,  # uint8 tensor
            chw.float() / 255.0,  # float tensor in [0, 1]
            astronaut_path.read_bytes(),
            str(astronaut_path),
        ]
    )
    assert isinstance(others, list) and len(others) == 6
    for prediction in others:
        assert prediction.p_fake == pytest.approx(from_path.p_fake, abs=1e-6)
    assert others[0].path is None and others[5].path == str(astronaut_path)
    batch = detector.predict(torch.stack([chw, chw.flip(-1)]))  # (B, 3, H, W) counts as a list
    assert isinstance(batch, list) and len(batch) == 2
    assert batch[0].p_fake == pytest.approx(from_path.p_fake, abs=1e-6)


def test_resize_convention_is_the_data_pipelines(detector: Detector, astronaut_rgb: np.ndarray) -> None:
    wide = np.ascontiguousarray(np.concatenate([astronaut_rgb, astronaut_rgb[:, :200]], axis=1))  # 512x712
    expected = detector.model.predict_proba(ImageTransform(64)(Image.fromarray(wide)).unsqueeze(0))
    assert detector.predict(wide).p_fake == pytest.approx(float(expected[0]), abs=1e-6)


def test_batching_and_chunking_do_not_change_scores(detector: Detector, astronaut_rgb: np.ndarray) -> None:
    crops = [astronaut_rgb[i * 40 : i * 40 + 300, i * 30 : i * 30 + 300] for i in range(7)]  # 7 > batch 4
    together = [p.p_fake for p in detector.predict(crops)]
    alone = [detector.predict(crop).p_fake for crop in crops]
    assert together == pytest.approx(alone, abs=1e-6)
    assert len(set(np.round(together, 6))) > 1


def test_threshold_sets_the_label(detector: Detector, astronaut_rgb: np.ndarray) -> None:
    p_fake = detector.predict(astronaut_rgb).p_fake
    assert detector.predict(astronaut_rgb, threshold=p_fake).label == "fake"  # at the threshold: fake
    assert detector.predict(astronaut_rgb, threshold=min(1.0, p_fake + 1e-3)).label == "real"
    assert detector.predict(astronaut_rgb, threshold=0.0).is_fake
    with pytest.raises(ValueError, match="threshold"):
        detector.predict(astronaut_rgb, threshold=1.5)


def test_bad_inputs_raise_clear_errors(detector: Detector, tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match=r"empty\.png: empty file"):
        detector.predict(empty)
    with pytest.raises(ImageDecodeError, match="not found"):
        detector.predict(tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match="HxWx3"):
        detector.predict(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        detector.predict(np.full((10, 10, 3), 2.0, dtype=np.float32))
    with pytest.raises(ValueError, match="unsupported input type"):
        detector.predict(12345)
    with pytest.raises(ImageDecodeError, match="predict_video"):
        detector.predict(tmp_path / "clip.mp4")


def test_predict_video(detector: Detector, astronaut_rgb: np.ndarray, tmp_path: Path) -> None:
    frames = [
        np.ascontiguousarray(astronaut_rgb[i * 8 : i * 8 + 256, i * 8 : i * 8 + 256]) for i in range(12)
    ]
    video = write_video(tmp_path / "clip.mp4", frames)
    result = detector.predict_video(video, frames=4)
    assert isinstance(result, VideoPrediction)
    assert result.frames == 4 and len(result.frame_scores) == 4
    assert result.p_fake == pytest.approx(float(np.mean(result.frame_scores)), abs=1e-7)
    assert result.p_fake_max == max(result.frame_scores) >= result.p_fake
    assert result.label == ("fake" if result.p_fake >= 0.5 else "real")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 but nothing else")
    with pytest.raises(VideoDecodeError, match=r"broken\.mp4"):
        detector.predict_video(broken)


def test_face_detection_crops_the_face(checkpoint: Path, astronaut_rgb: np.ndarray) -> None:
    faces = Detector.from_pretrained(checkpoint, device="cpu", face_detector="haar")
    prediction = faces.predict(astronaut_rgb)
    assert prediction.box is not None
    x0, y0, x1, y1 = prediction.box
    # skimage's astronaut: the face is around x 180-270, y 60-170.
    assert 150 < x0 < x1 < 300 and 30 < y0 < y1 < 200
    with pytest.raises(ValueError, match="unknown face detector"):
        Detector.from_pretrained(checkpoint, device="cpu", face_detector="dlib")


def test_model_card(detector: Detector, checkpoint: Path) -> None:
    card = detector.model_card()
    assert card["name"] == "detector-test" and card["preset"] == "mfclip-tiny"
    assert card["architecture"] == "MFCLIP"
    assert card["image_size"] == 64 and card["parameters"] > 0
    assert card["metadata"]["protocol"]["name"] == "cross-generator"
    assert card["metadata"]["synthetic"] is True
    assert card["input"] == {"resize": "shorter_side_center_crop", "interpolation": "bicubic", "face": None}
    assert card["format"] == "mfclip-checkpoint" and card["format_version"] == 2
    assert card["card"] == (checkpoint / "README.md").read_text(encoding="utf-8")
    assert card["config"]["vision"]["noise"]["grid"] == 2
    json.dumps(card)  # serialisable as is
    summary = detector.summary()
    assert "detector-test (mfclip-tiny)" in summary and "64 px" in summary
    assert "protocol cross-generator" in summary and "SYNTHETIC" in summary


def test_missing_corrupt_and_unreachable_checkpoints(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        Detector.from_pretrained(tmp_path / "nowhere")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"config\.json"):
        Detector.from_pretrained(corrupt)
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    for name in ("config.json", "README.md"):
        (truncated / name).write_bytes((checkpoint / name).read_bytes())
    (truncated / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        Detector.from_pretrained(truncated)
    # A Hub id cannot be fetched offline (HF_HUB_OFFLINE=1 in the tests): a clear error, not a traceback.
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE=1"):
        Detector.from_pretrained("hf-hub:mfclip-org/no-such-model")


def test_bfloat16_runs_and_stays_close(
    checkpoint: Path, detector: Detector, astronaut_rgb: np.ndarray
) -> None:
    half = Detector.from_pretrained(checkpoint, device="cpu", dtype="bfloat16")
    assert half.predict(astronaut_rgb).p_fake == pytest.approx(
        detector.predict(astronaut_rgb).p_fake, abs=0.05
    )


def test_devices_are_checked_before_use(monkeypatch: pytest.MonkeyPatch, checkpoint: Path) -> None:
    from mfclip.utils.device import DeviceError, resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    automatic = resolve_device(None)
    assert automatic == resolve_device("auto") == resolve_device("AUTO") and automatic.type in ("cpu", "mps")
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    for device, message in [
        ("foo", "--device foo: not a device (auto, cpu, cuda, cuda:N, mps)"),
        ("cuda:x", "--device cuda:x: not a device"),
        ("meta", "--device meta: not a supported device"),
        ("cuda", "--device cuda: no CUDA device is available (use auto or cpu)"),
        (torch.device("cuda", 0), "--device cuda:0: no CUDA device is available"),
    ]:
        with pytest.raises(DeviceError, match=re.escape(message)):
            resolve_device(device)
    with pytest.raises(ValueError, match="no CUDA device"):
        Detector.from_pretrained(checkpoint, device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(
        DeviceError, match=r"--device cuda:2: this machine has 2 CUDA device\(s\), cuda:0 to cuda:1"
    ):
        resolve_device("cuda:2")
