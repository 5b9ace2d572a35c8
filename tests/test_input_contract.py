"""The run contract: a model is evaluated, served, explained and exported with what it was trained with.

A tiny MFCLIP is trained through ``mfclip train`` with a non-default resize (``direct``), interpolation
(``bilinear``) and a custom prompt set, on non-square images. Every entry point then has to feed the model
exactly the tensor an independent PIL computation of those settings gives (``torch.equal``): the training
data module, ``Detector``, ``mfclip predict``, ``mfclip eval``, ``mfclip explain``, ``mfclip serve``
through its HTTP app, and the ONNX export's recorded preprocessing. Face crops: a model whose input
contract records mtcnn + DeepfakeBench alignment cuts faces from photos exactly as ``mfclip preprocess``
cut its training crops.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from mfclip import Detector
from mfclip.cli.errors import run_app
from mfclip.cli.main import app
from mfclip.data.transforms import ImageTransform, to_tensor
from mfclip.inputs import FaceCropConfig, InputConfig, input_contract
from mfclip.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mfclip.models.metadata import CheckpointMetadata
from mfclip.models.registry import create_model, get_model_config, list_model_types, list_models
from mfclip.models.registry import model_type as registered_type
from mfclip.models.vision import MultiModalVisionEncoder
from train_toy import SMALL

SIZE = 32
CUSTOM_REAL_PROMPT = "A photo of an untouched human face"


def non_square_image(rng: np.random.Generator, fake: bool) -> np.ndarray:
    """A 48 x 30 colour field; fakes carry a faint checkerboard (learnable, like the toy set's)."""
    coarse = rng.uniform(40, 215, (3, 4, 3))
    field = np.kron(coarse, np.ones((10, 12, 1))) + rng.normal(0, 3, (30, 48, 3))
    if fake:
        yy, xx = np.mgrid[:30, :48]
        field += np.where((yy + xx) % 2 == 0, 12.0, -12.0)[..., None]
    return np.clip(field, 0, 255).astype(np.uint8)


def expected_input(path: Path) -> torch.Tensor:
    """The model input of ``direct`` + ``bilinear`` at SIZE px, computed with PIL alone."""
    with Image.open(path) as image:
        return to_tensor(image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("contract-data")
    rng = np.random.default_rng(0)
    rows = []
    for split, count in (("train", 8), ("val", 4), ("test", 3)):
        for label in (0, 1):
            for i in range(count):
                relative = f"{split}/{label}_{i}.png"
                (root / split).mkdir(exist_ok=True)
                Image.fromarray(non_square_image(rng, bool(label))).save(root / relative)
                rows.append(
                    {
                        "path": relative,
                        "label": label,
                        "split": split,
                        "dataset": "toy",
                        "forgery_type": "entire_synthesis" if label else "",
                        "family": "diffusion" if label else "",
                        "generator": "SDXL" if label else "",
                        "video_id": "",
                    }
                )
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    from mfclip.prompts import load_prompt_set

    prompts = load_prompt_set("default").to_dict()
    prompts["name"] = "custom"
    prompts["real"] = CUSTOM_REAL_PROMPT
    (root / "custom-prompts.yaml").write_text(yaml.safe_dump(prompts), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def run_dir(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("contract-run") / "run"
    args = [
        "train",
        "--config",
        "tiny",
        "--manifest",
        str(data / "manifest.csv"),
        "--out",
        str(run),
        *SMALL,
        "data.batch_size=4",
        "trainer.max_epochs=1",
        "data.resize=direct",
        "data.interpolation=bilinear",
        f"data.prompt_set={data / 'custom-prompts.yaml'}",
    ]
    assert run_app(app, args) == 0
    return run


@pytest.fixture
def model_inputs(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Every image batch MFCLIP's vision encoder receives while the test runs (all paths go through it)."""
    seen: list[torch.Tensor] = []
    forward = MultiModalVisionEncoder.forward

    def recording(self: MultiModalVisionEncoder, images: torch.Tensor) -> Any:
        seen.append(images.detach().float().cpu().clone())
        return forward(self, images)

    monkeypatch.setattr(MultiModalVisionEncoder, "forward", recording)
    return seen


def test_the_checkpoint_records_the_training_settings(run_dir: Path, data: Path) -> None:
    model, metadata = load_checkpoint(run_dir / "best")
    assert model.input_config == InputConfig(resize="direct", interpolation="bilinear", face=None)
    document = json.loads((run_dir / "best" / "config.json").read_text())
    assert document["model"]["input"] == {"resize": "direct", "interpolation": "bilinear", "face": None}
    assert isinstance(metadata, CheckpointMetadata)
    assert metadata.prompt_set is not None
    assert metadata.prompt_set.name == str(data / "custom-prompts.yaml")
    assert metadata.prompts().real == CUSTOM_REAL_PROMPT  # the content travels with the model
    card = (run_dir / "best" / "README.md").read_text()
    assert "input resize: `direct`" in card and "input interpolation: `bilinear`" in card


def test_the_settings_change_the_pixels(data: Path) -> None:
    """Guard: with the defaults the same image gives another tensor, so the checks below can fail."""
    path = data / "test" / "1_0.png"
    default = ImageTransform(SIZE)(Image.open(path).convert("RGB"))
    assert not torch.equal(default, expected_input(path))


def test_training_and_validation_data_use_the_contract(run_dir: Path, data: Path) -> None:
    from mfclip.engine.config import load_train_config
    from mfclip.engine.datamodule import DetectorDataModule

    model, _ = load_checkpoint(run_dir / "best")
    config = load_train_config(run_dir / "config.yaml")
    module = DetectorDataModule(config.data, model)
    module.setup()
    assert module.val_set is not None and module.train_set is not None
    for position in range(len(module.val_set)):
        item = module.val_set[position]
        assert torch.equal(item["image"], expected_input(data / item["path"])), item["path"]
    assert module.train_transform.config.resize == "direct"
    assert module.train_transform.config.interpolation == "bilinear"


def test_detector_and_predict_feed_the_contract(
    run_dir: Path, data: Path, tmp_path: Path, model_inputs: list[torch.Tensor]
) -> None:
    path = data / "test" / "1_0.png"
    detector = Detector.from_pretrained(run_dir / "best", device="cpu")
    assert torch.equal(detector.prepare(path).tensor, expected_input(path))
    detector.predict(path)
    assert len(model_inputs) == 1 and torch.equal(model_inputs[0][0], expected_input(path))

    model_inputs.clear()
    out = tmp_path / "scores.csv"
    args = ["predict", str(path), "--checkpoint", str(run_dir / "best"), "--out", str(out)]
    assert run_app(app, [*args, "--device", "cpu", "--no-progress"]) == 0
    assert [torch.equal(batch[0], expected_input(path)) for batch in model_inputs] == [True]


def test_mfclip_eval_feeds_the_contract(
    run_dir: Path, data: Path, tmp_path: Path, model_inputs: list[torch.Tensor]
) -> None:
    args = ["eval", "--checkpoint", str(run_dir), "--manifest", str(data / "manifest.csv")]
    args += ["--out", str(tmp_path / "eval"), "--no-plots", "--no-progress", "--workers", "0"]
    assert run_app(app, [*args, "--device", "cpu"]) == 0
    test_rows = pd.read_csv(data / "manifest.csv").query("split == 'test'")
    expected = torch.stack([expected_input(data / p) for p in test_rows["path"]])
    assert torch.equal(torch.cat(model_inputs), expected)


def test_mfclip_explain_feeds_the_contract_and_uses_the_trained_prompts(
    run_dir: Path, data: Path, tmp_path: Path, model_inputs: list[torch.Tensor]
) -> None:
    path = data / "test" / "1_1.png"
    args = ["explain", str(path), "--checkpoint", str(run_dir / "best"), "--out", str(tmp_path / "p.png")]
    assert run_app(app, [*args, "--device", "cpu"]) == 0
    assert model_inputs and all(torch.equal(batch[0], expected_input(path)) for batch in model_inputs)

    explanation = Detector.from_pretrained(run_dir / "best", device="cpu").explain(path)
    assert CUSTOM_REAL_PROMPT in {s.prompt for s in explanation.prompt_similarities}
    shown = torch.from_numpy(explanation.image).permute(2, 0, 1).float() / 255.0
    assert torch.equal(shown, expected_input(path))


def test_mfclip_serve_feeds_the_contract(
    run_dir: Path, data: Path, monkeypatch: pytest.MonkeyPatch, model_inputs: list[torch.Tensor]
) -> None:
    from fastapi.testclient import TestClient

    import mfclip.serve

    served: dict[str, Any] = {}
    monkeypatch.setattr(
        mfclip.serve, "run_server", lambda application, _: served.setdefault("app", application)
    )
    assert run_app(app, ["serve", "--checkpoint", str(run_dir / "best"), "--device", "cpu"]) == 0
    path = data / "test" / "1_2.png"
    with TestClient(served["app"]) as client:
        response = client.post("/v1/detect", files={"file": (path.name, path.read_bytes(), "image/png")})
        assert response.status_code == 200, response.text
        card = client.get("/v1/model").json()
    assert [torch.equal(batch[0], expected_input(path)) for batch in model_inputs] == [True]
    assert card["input"]["resize"] == "direct" and card["input"]["interpolation"] == "bilinear"


def test_onnx_export_records_the_contract(run_dir: Path, data: Path, tmp_path: Path) -> None:
    from mfclip.inference.export import exported_input_contract, exported_transform, load_exported

    out = tmp_path / "model.onnx"
    assert run_app(app, ["export", "--checkpoint", str(run_dir / "best"), "--out", str(out)]) == 0
    size, contract = exported_input_contract(out)
    assert size == SIZE and contract == InputConfig(resize="direct", interpolation="bilinear")
    path = data / "test" / "0_2.png"
    pixels = exported_transform(out)(Image.open(path).convert("RGB"))
    assert torch.equal(pixels, expected_input(path))
    detector = Detector.from_pretrained(run_dir / "best", device="cpu")
    onnx_score = load_exported(out)(pixels[None].numpy())[0]
    assert float(onnx_score) == pytest.approx(detector.predict(path).p_fake, abs=1e-4)


# ------------------------------------------------------------------------------------------------
# Face crops


@pytest.fixture(scope="module")
def aligned_crops(
    tmp_path_factory: pytest.TempPathFactory, astronaut_path: Path, grace_hopper_path: Path
) -> Path:
    from mfclip.face import PreprocessConfig, preprocess

    out = tmp_path_factory.mktemp("aligned")
    config = PreprocessConfig(align="deepfakebench", scale=1.5, size=96, workers=1, progress=False)
    result = preprocess([astronaut_path, grace_hopper_path], out, config)
    assert result.faces == 2
    return out


def test_training_records_the_preprocess_crop_settings(aligned_crops: Path) -> None:
    from mfclip.engine.config import DataSection
    from mfclip.engine.datamodule import TrainingRows, resolve_input_contract

    manifest = aligned_crops / "manifest.csv"
    rows = TrainingRows(pd.DataFrame(), pd.DataFrame(), aligned_crops, aligned_crops, manifest, manifest)
    preset = InputConfig()
    recorded = resolve_input_contract(DataSection(manifest=str(manifest)), rows, preset).face
    assert recorded == FaceCropConfig(detector="mtcnn", align="deepfakebench", scale=1.5, size=96)
    assert resolve_input_contract(DataSection(face_crop="off"), rows, preset).face is None
    explicit = FaceCropConfig(detector="haar", margin=0.5)
    assert resolve_input_contract(DataSection(face_crop=explicit), rows, preset).face == explicit


def test_scoring_cuts_faces_as_preprocess_did(aligned_crops: Path, tmp_path: Path) -> None:
    from mfclip.face import crop_settings_of

    crop = crop_settings_of(aligned_crops)
    assert crop is not None
    torch.manual_seed(0)
    model = create_model("mfclip-tiny", input={"resize": "direct", "face": crop.to_dict()})
    checkpoint = save_checkpoint(model, tmp_path / "aligned-model")
    detector = Detector.from_pretrained(checkpoint, device="cpu")  # face_detector="auto"
    assert detector.preprocessor.face == crop
    transform = ImageTransform.for_model(model)
    rows = pd.read_csv(aligned_crops / "manifest.csv")
    for _, row in rows.iterrows():
        with Image.open(aligned_crops / row["path"]) as saved_crop:
            expected = transform(saved_crop.convert("RGB"))
        prepared = detector.prepare(Path(row["source"]))
        assert torch.equal(prepared.tensor, expected), row["source"]
        box = tuple(round(row[f"box_{k}"]) for k in ("x0", "y0", "x1", "y1"))
        assert prepared.box is not None and np.allclose(prepared.box, box, atol=1)
    assert Detector(model, device="cpu", face_detector="off").preprocessor.face is None
    with pytest.raises(ValueError, match=r"aligned faces.*mtcnn"):
        Detector(model, device="cpu", face_detector="haar")


# ------------------------------------------------------------------------------------------------
# Every model declares a contract; older checkpoints load with the documented defaults


@pytest.mark.parametrize("name", list_models())
def test_every_preset_declares_an_input_contract(name: str) -> None:
    size, contract = input_contract(get_model_config(name))
    assert size > 0 and isinstance(contract, InputConfig)


# The types mfclip registers itself (tests may register toy types of their own).
BUILT_IN_TYPES = [
    t for t in list_model_types() if registered_type(t).builder.__module__.startswith("mfclip.")
]


@pytest.mark.parametrize("type_name", BUILT_IN_TYPES)
def test_every_model_type_has_an_input_field(type_name: str) -> None:
    field = registered_type(type_name).config_class.model_fields.get("input")
    assert field is not None and field.annotation is InputConfig


def _as_format_1(checkpoint: Path, metadata: dict[str, Any]) -> None:
    document = json.loads((checkpoint / "config.json").read_text())
    document["format_version"] = 1
    del document["model"]["input"]
    document["metadata"] = metadata
    (checkpoint / "config.json").write_text(json.dumps(document))


def test_format_1_checkpoints_load_with_documented_defaults(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("mfclip-tiny", input={"resize": "direct"})
    plain = save_checkpoint(model, tmp_path / "plain")
    _as_format_1(plain, {"name": "old", "protocol": "cross-generator", "variant": "t2i", "note": 1})
    loaded, metadata = load_checkpoint(plain)
    assert loaded.input_config == InputConfig()  # shorter_side_center_crop, bicubic, no face crop
    assert metadata.name == "old" and metadata.protocol is not None
    assert (metadata.protocol.name, metadata.protocol.variant) == ("cross-generator", "t2i")
    assert metadata.extra == {"note": 1} and metadata.prompts().name == "default"

    recorded = save_checkpoint(model, tmp_path / "recorded")
    _as_format_1(recorded, {"transform": {"resize": "direct", "interpolation": "bilinear"}})
    detector = Detector.from_pretrained(recorded, device="cpu")
    assert detector.model.input_config == InputConfig(resize="direct", interpolation="bilinear")
    assert detector.preprocessor.transform.config.resize == "direct"


def test_metadata_is_validated(tmp_path: Path) -> None:
    model = create_model("mfclip-tiny")
    with pytest.raises(CheckpointError, match=r"unknown key 'epoch'.*extra"):
        save_checkpoint(model, tmp_path / "a", {"epoch": 3})
    with pytest.raises(CheckpointError, match="synthetic"):
        save_checkpoint(model, tmp_path / "b", {"synthetic": "sometimes"})
    saved = save_checkpoint(model, tmp_path / "c", CheckpointMetadata(epochs=3, extra={"run": "x"}))
    document = json.loads((saved / "config.json").read_text())
    document["metadata"]["datasets"] = {"not": "a list"}
    (saved / "config.json").write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match=r"(?s)config\.json: metadata.*datasets"):
        load_checkpoint(saved)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, still what old exports are
def test_exported_files_without_a_contract_are_refused(tmp_path: Path) -> None:
    from mfclip.inference.export import ExportError, exported_input_contract

    fake = tmp_path / "old.pt"
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Identity()), buffer, _extra_files={"mfclip.json": "{}"})
    fake.write_bytes(buffer.getvalue())
    with pytest.raises(ExportError, match="records no input contract"):
        exported_input_contract(fake)
