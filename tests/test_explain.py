"""Explanations: Grad-CAM of the image branch, the richest patch and its SRM residual, prompt similarities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mfclip import Detector
from mfclip.cli.errors import run_app
from mfclip.cli.main import app
from mfclip.data.transforms import ImageTransform
from mfclip.inference.explain import Explanation
from mfclip.models.checkpoint import save_checkpoint
from mfclip.models.registry import create_model
from mfclip.ops import richest_patch, srm_residual
from mfclip.prompts import load_prompt_set


def saved_detector(root: Path, name: str, **overrides) -> Detector:
    torch.manual_seed(0)
    directory = save_checkpoint(create_model("mfclip-tiny", **overrides), root / name, {"name": name})
    return Detector.from_pretrained(directory, device="cpu")


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Detector:
    return saved_detector(tmp_path_factory.mktemp("explain"), "full")


@pytest.fixture(scope="module")
def explanation(detector: Detector, astronaut_path: Path) -> Explanation:
    return detector.explain(astronaut_path)


def test_score_heat_map_patch_and_residual(
    detector: Detector, explanation: Explanation, astronaut_path: Path
) -> None:
    assert explanation.p_fake == pytest.approx(detector.predict(astronaut_path).p_fake, abs=1e-6)
    assert explanation.label == ("fake" if explanation.p_fake >= 0.5 else "real")
    image = ImageTransform(64)(Image.open(astronaut_path).convert("RGB"))
    assert explanation.image.shape == (64, 64, 3) and explanation.image.dtype == np.uint8
    assert np.array_equal(explanation.image, (image.permute(1, 2, 0) * 255).round().byte().numpy())
    heat = explanation.heatmap
    assert heat is not None and heat.shape == (64, 64)
    assert heat.min() >= 0.0 and heat.max() <= 1.0 and heat.std() > 0  # a real map, not a constant
    # The outlined patch is the one the model's noise branch selects (lowest GLCM homogeneity)…
    patch, index = richest_patch(image.unsqueeze(0), grid=2)
    row, col = divmod(int(index[0]), 2)
    assert explanation.patch_box == (col * 32, row * 32, col * 32 + 32, row * 32 + 32)
    assert explanation.patch_mode == "richest"
    # …and the residual shown is that patch's SRM response.
    assert explanation.srm is not None and explanation.srm.shape == (32, 32, 3)
    expected = srm_residual(patch)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(explanation.srm, expected, atol=1e-6)


def test_prompt_similarities_cover_every_level(explanation: Explanation) -> None:
    prompts = load_prompt_set("default")
    similarities = explanation.prompt_similarities
    assert {s.level for s in similarities} == {1, 2, 3, 4}
    level2 = {s.prompt for s in similarities if s.level == 2}
    assert level2 == {prompts.real, *prompts.levels.forgery_type.values()}
    assert all(-1.0 <= s.similarity <= 1.0 for s in similarities)
    assert len({round(s.similarity, 6) for s in similarities}) > 2


def test_panel_png(explanation: Explanation, tmp_path: Path) -> None:
    path = explanation.save(tmp_path / "panel.png")
    panel = Image.open(path)
    assert panel.format == "PNG" and panel.width >= 900 and panel.height >= 600
    assert explanation.to_png()[:8] == b"\x89PNG\r\n\x1a\n"


def test_models_without_text_or_noise_branch(tmp_path: Path, astronaut_rgb: np.ndarray) -> None:
    image_only = saved_detector(
        tmp_path, "image-only", **{"vision.noise_branch": False, "losses.cmc": 0, "losses.kl": 0}
    )
    result = image_only.explain(astronaut_rgb)
    assert result.heatmap is not None and result.patch_box is None and result.srm is None
    assert result.prompt_similarities == []
    assert Image.open(result.save(tmp_path / "image-only.png")).width > 400
    noise_only = saved_detector(tmp_path, "noise-only", **{"vision.image_branch": False})
    result = noise_only.explain(astronaut_rgb)
    assert result.heatmap is None and any("Grad-CAM" in note for note in result.notes)
    assert result.patch_box is not None and result.srm is not None


def test_explain_cli(detector: Detector, astronaut_path: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.png"
    code = run_app(
        app, ["explain", "--checkpoint", str(detector.checkpoint), str(astronaut_path), "--out", str(out)]
    )
    assert code == 0 and Image.open(out).format == "PNG"
    assert "P(fake) = " in capsys.readouterr().out
    assert (
        run_app(app, ["explain", "-c", str(detector.checkpoint), str(tmp_path / "none.png"), "-o", str(out)])
        == 2
    )
    assert "file not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("panel.jpg", "JPEG"),
        ("panel.JPEG", "JPEG"),
        ("panel.png", "PNG"),
        ("panel.pdf", "%PDF"),
        ("panel.svg", "<svg"),
    ],
)
def test_panel_is_saved_in_the_format_its_suffix_names(
    explanation: Explanation, tmp_path: Path, name: str, expected: str
) -> None:
    path = explanation.save(tmp_path / name)
    if expected in ("JPEG", "PNG"):
        assert Image.open(path).format == expected
    else:
        assert expected.encode() in path.read_bytes()[:400]


def test_explain_cli_writes_jpeg_and_refuses_other_suffixes(
    detector: Detector, explanation: Explanation, astronaut_path: Path, tmp_path: Path, capsys
) -> None:
    checkpoint = str(detector.checkpoint)
    out = tmp_path / "panel.jpg"
    assert run_app(app, ["explain", "-c", checkpoint, str(astronaut_path), "-o", str(out)]) == 0
    assert Image.open(out).format == "JPEG"
    bad = tmp_path / "panel.gif"
    assert run_app(app, ["explain", "-c", checkpoint, str(astronaut_path), "-o", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: cannot write the panel as '.gif'" in err and ".png, .jpg, .jpeg, .pdf, .svg" in err
    assert not bad.exists()
    with pytest.raises(ValueError, match="cannot write the panel as '\\(no suffix\\)'"):
        explanation.save(tmp_path / "panel")
