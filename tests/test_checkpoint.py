"""mfclip checkpoint directories: save → load round trips, tolerated prefixes, and every corruption case."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mfclip.models.base import DetectorModel, ModelOutput
from mfclip.models.checkpoint import (
    CheckpointError,
    is_checkpoint_dir,
    load_checkpoint,
    load_state_dict_into,
    read_checkpoint_config,
    save_checkpoint,
)
from mfclip.models.metadata import CheckpointMetadata
from mfclip.models.registry import create_model, register_model_type
from mfclip.utils.config import StrictConfig

METADATA = {
    "name": "mfclip-tiny-demo",
    "train_manifest": "data/synthetic/manifest.csv",
    "datasets": ["synthetic-faces"],
    "protocol": "cross-generator",
    "metrics": {"seen": {"auc": 0.91234, "ap": 0.9}, "unseen": {"auc": 0.71111, "ap": 0.7}},
    "synthetic": True,
    "epochs": 2,
}


def tiny_model(seed: int = 0, **overrides) -> DetectorModel:
    torch.manual_seed(seed)
    model = create_model("mfclip-tiny", **overrides)
    with torch.no_grad():  # move every saved value away from its initialisation, buffers included
        gen = torch.Generator().manual_seed(seed + 1)
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.01 * torch.randn(tensor.shape, generator=gen))
    return model.eval()


@pytest.fixture(scope="module")
def model() -> DetectorModel:
    return tiny_model()


@pytest.fixture(scope="module")
def saved(model: DetectorModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny", METADATA)


def copy_checkpoint(saved: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    target.mkdir()
    for item in saved.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    return target


IMAGES = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))


# ------------------------------------------------------------------------------------------------
# Round trips
# ------------------------------------------------------------------------------------------------


def test_round_trip_reproduces_outputs_exactly(model: DetectorModel, saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]  # no staging dirs left

    loaded, metadata = load_checkpoint(saved)
    assert metadata == CheckpointMetadata.coerce(METADATA)
    assert type(loaded) is type(model)
    assert not loaded.training
    assert loaded.config.to_dict() == model.config.to_dict()
    original = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, original[key]), key
    with torch.no_grad():
        assert torch.equal(loaded.predict_proba(IMAGES), model.predict_proba(IMAGES))
        assert torch.equal(loaded(IMAGES).logits, model(IMAGES).logits)


def test_config_json_layout(model: DetectorModel, saved: Path) -> None:
    from mfclip import __version__

    document = json.loads((saved / "config.json").read_text())
    assert document["format"] == "mfclip-checkpoint"
    assert document["format_version"] == 2
    assert document["mfclip_version"] == __version__
    assert document["model"] == model.config.to_dict()
    assert document["metadata"] == CheckpointMetadata.coerce(METADATA).to_dict()
    assert document["weights"]["file"] == "model.safetensors"
    assert document["weights"]["bytes"] == (saved / "model.safetensors").stat().st_size
    assert document["weights"]["parameters"] == sum(p.numel() for p in model.parameters())
    assert read_checkpoint_config(saved) == document
    assert is_checkpoint_dir(saved)
    assert not is_checkpoint_dir(saved.parent)
    assert not is_checkpoint_dir(saved / "model.safetensors")


def test_model_card_mentions_synthetic_data_and_metrics(saved: Path) -> None:
    from huggingface_hub import ModelCard

    from mfclip.models.model_card import strip_front_matter

    text = (saved / "README.md").read_text()
    hub = ModelCard(text).data.to_dict()  # the Hub's own parser reads the front matter
    assert hub["library_name"] == "mfclip"
    assert hub["synthetic_training_data"] is True and "synthetic-data" in hub["tags"]
    assert hub["datasets"] == ["synthetic-faces"]
    results = {
        (r["dataset"]["name"], m["type"]): m["value"]
        for r in hub["model-index"][0]["results"]
        for m in r["metrics"]
    }
    assert results == {
        ("seen", "auc"): 0.91234,
        ("seen", "ap"): 0.9,
        ("unseen", "auc"): 0.71111,
        ("unseen", "ap"): 0.7,
    }
    card = strip_front_matter(text)
    assert card.startswith("# mfclip-tiny-demo")
    head = card[:600]
    assert "Trained on synthetic data" in head  # prominent: right under the title
    assert "| test set | auc | ap |" in card
    assert "| unseen | 0.7111 | 0.7000 |" in card
    assert "data/synthetic/manifest.csv" in card
    assert "cross-generator" in card
    assert "load_checkpoint" in card
    assert "parameters:" in card
    assert "sample pair attention: `content`" in card


def test_card_without_training_information(tmp_path: Path) -> None:
    path = save_checkpoint(tiny_model(seed=3), tmp_path / "untrained")
    card = (path / "README.md").read_text()
    assert "synthetic" not in card.lower()
    assert "No training information was recorded" in card
    assert "No evaluation results were recorded" in card
    assert load_checkpoint(path)[1] == CheckpointMetadata()


def test_saving_over_an_existing_checkpoint(model: DetectorModel, tmp_path: Path) -> None:
    target = tmp_path / "run"
    save_checkpoint(tiny_model(seed=7), target, {"epochs": 1})
    (target / "events.log").write_text("kept")
    extra = {"path": Path("a/b"), "score": np.float32(0.5)}
    save_checkpoint(model, target, {"epochs": 2, "extra": extra})
    assert (target / "events.log").read_text() == "kept"
    loaded, metadata = load_checkpoint(target)
    assert metadata.epochs == 2 and metadata.extra == {"path": "a/b", "score": 0.5}
    with torch.no_grad():
        assert torch.equal(loaded.predict_proba(IMAGES), model.predict_proba(IMAGES))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_bad_metadata_and_targets(model: DetectorModel, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"metadata\.blob: object is not JSON-serialisable"):
        save_checkpoint(model, tmp_path / "x", {"blob": object()})
    assert not (tmp_path / "x").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(CheckpointError, match="not a directory"):
        save_checkpoint(model, tmp_path / "file")


class TiedConfig(StrictConfig):
    type: Literal["test-tied"] = "test-tied"
    image_size: int = 8


class TiedModel(DetectorModel):
    """A detector whose decoder reuses its encoder's weight (tied tensors)."""

    def __init__(self, config: TiedConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = nn.Linear(3, 3, bias=False)
        self.decoder = nn.Linear(3, 3, bias=False)
        self.decoder.weight = self.encoder.weight
        self.head = nn.Linear(3, 2)

    def forward(self, images, prompt_tokens=None, prompt_mask=None) -> ModelOutput:
        pooled = images.mean(dim=(2, 3))
        return ModelOutput(logits=self.head(self.decoder(self.encoder(pooled))))


register_model_type("test-tied", TiedConfig)(TiedModel)


def test_tied_tensors_are_stored_once_and_restored(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TiedModel(TiedConfig()).eval()
    path = save_checkpoint(model, tmp_path / "tied")
    stored = load_file(str(path / "model.safetensors"))
    assert len(stored) == 3  # encoder.weight, head.weight, head.bias
    loaded, _ = load_checkpoint(path)
    assert torch.equal(loaded.decoder.weight, model.encoder.weight)
    assert loaded.decoder.weight is loaded.encoder.weight
    images = torch.rand(2, 3, 8, 8)
    assert torch.equal(loaded(images).logits, model(images).logits)


# ------------------------------------------------------------------------------------------------
# Other files and prefixes
# ------------------------------------------------------------------------------------------------


def test_prefixed_state_dicts_are_tolerated(model: DetectorModel) -> None:
    state = model.state_dict()
    for prefix in ("module.", "_orig_mod.", "module._orig_mod.", "model.", "model._orig_mod."):
        target = tiny_model(seed=11)
        report = load_state_dict_into(target, {prefix + k: v for k, v in state.items()})
        assert report == {"missing": [], "unexpected": []}
        assert all(torch.equal(v, state[k]) for k, v in target.state_dict().items()), prefix


def test_directory_with_prefixed_weights(model: DetectorModel, saved: Path, tmp_path: Path) -> None:
    copy = copy_checkpoint(saved, tmp_path)
    save_file(
        {f"module.{k}": v.contiguous() for k, v in model.state_dict().items()},
        str(copy / "model.safetensors"),
    )
    document = json.loads((copy / "config.json").read_text())
    del document["weights"]  # a hand-assembled checkpoint records no size or checksum
    (copy / "config.json").write_text(json.dumps(document))
    loaded, _ = load_checkpoint(copy)
    with torch.no_grad():
        assert torch.equal(loaded.predict_proba(IMAGES), model.predict_proba(IMAGES))


def test_lightning_style_file_with_hyper_parameters(model: DetectorModel, tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    torch.save(
        {
            "epoch": 4,
            "global_step": 40,
            "pytorch-lightning_version": "2.6.0",
            "state_dict": {f"model._orig_mod.{k}": v for k, v in model.state_dict().items()}
            | {"criterion.weight": torch.ones(2)},
            "hyper_parameters": {
                "model": model.config.to_dict(),
                "lr": 1e-4,
                "metadata": {"synthetic": True},
            },
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]}],
        },
        path,
    )
    loaded, metadata = load_checkpoint(path)
    assert metadata.global_step == 40 and metadata.synthetic is True
    assert metadata.extra == {"epoch": 4, "pytorch-lightning_version": "2.6.0"}
    with torch.no_grad():
        assert torch.equal(loaded.predict_proba(IMAGES), model.predict_proba(IMAGES))


@pytest.mark.slow
def test_real_lightning_checkpoint(model: DetectorModel, tmp_path: Path) -> None:
    import lightning.pytorch as pl

    class Module(pl.LightningModule):
        def __init__(self, model_config: dict) -> None:
            super().__init__()
            self.save_hyperparameters({"model": model_config})
            self.model = create_model("mfclip-tiny")

        def training_step(self, batch, batch_idx):
            return self.model(batch[0]).logits.sum() * 0.0

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    module = Module(model.config.to_dict())
    module.model.load_state_dict(model.state_dict())
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(IMAGES), batch_size=3)
    trainer.fit(module, loader)
    trainer.save_checkpoint(tmp_path / "real.ckpt")
    loaded, metadata = load_checkpoint(tmp_path / "real.ckpt")
    assert metadata.global_step == 1
    trained = module.model.eval()  # the step updated BatchNorm statistics
    with torch.no_grad():
        assert torch.equal(loaded.predict_proba(IMAGES), trained.predict_proba(IMAGES))


def test_plain_pt_needs_a_config(model: DetectorModel, tmp_path: Path, saved: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"records no model config.*config="):
        load_checkpoint(path)
    for config in ("mfclip-tiny", model.config.to_dict(), saved):
        loaded, _ = load_checkpoint(path, config=config)
        with torch.no_grad():
            assert torch.equal(loaded.predict_proba(IMAGES), model.predict_proba(IMAGES))
    yaml_path = tmp_path / "model.yaml"
    import yaml

    yaml_path.write_text(yaml.safe_dump(model.config.to_dict()))
    assert load_checkpoint(path, config=yaml_path)[0].config.to_dict() == model.config.to_dict()

    bare = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(bare))
    with pytest.raises(CheckpointError, match="records no model config"):
        load_checkpoint(bare)
    loaded, _ = load_checkpoint(bare, config=yaml_path)
    with torch.no_grad():
        assert torch.equal(loaded.predict_proba(IMAGES), model.predict_proba(IMAGES))


def test_another_weights_file_of_a_checkpoint_is_the_one_loaded(
    model: DetectorModel, saved: Path, tmp_path: Path
) -> None:
    """``load_checkpoint(DIR/ema.safetensors)`` loads that file, with the folder's config."""
    copy = copy_checkpoint(saved, tmp_path)
    other = tiny_model(seed=7)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(copy / "ema.safetensors"))
    loaded, _ = load_checkpoint(copy / "ema.safetensors")
    with torch.no_grad():
        assert torch.equal(loaded.predict_proba(IMAGES), other.predict_proba(IMAGES))
    assert torch.equal(
        load_checkpoint(copy / "model.safetensors")[0].predict_proba(IMAGES), model.predict_proba(IMAGES)
    )


# ------------------------------------------------------------------------------------------------
# Corruption: each case names the problem
# ------------------------------------------------------------------------------------------------


def test_missing_directory_and_config(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"config\.json is missing"):
        load_checkpoint(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_checkpoint_config(tmp_path / "absent")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "config.json: not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (
            json.dumps({"format": "something-else", "format_version": 1, "model": {}}),
            "format is 'something-else'",
        ),
        (
            json.dumps({"model_type": "clip", "architectures": ["CLIPModel"]}),
            "looks like a Hugging Face model",
        ),
        (json.dumps({"format": "mfclip-checkpoint", "format_version": 3, "model": {}}), "newer mfclip"),
        (
            json.dumps({"format": "mfclip-checkpoint", "format_version": "1", "model": {}}),
            "must be an integer",
        ),
        (json.dumps({"format": "mfclip-checkpoint", "format_version": 1}), "'model'.*missing"),
    ],
)
def test_bad_config_json(saved: Path, tmp_path: Path, content: str, message: str) -> None:
    copy = copy_checkpoint(saved, tmp_path)
    (copy / "config.json").write_text(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(copy)
    assert not is_checkpoint_dir(copy) or "format_version" in content


def test_unknown_model_type(saved: Path, tmp_path: Path) -> None:
    copy = copy_checkpoint(saved, tmp_path)
    document = json.loads((copy / "config.json").read_text())
    document["model"]["type"] = "mfclipp"
    (copy / "config.json").write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match=r"unknown model type 'mfclipp'.*did you mean 'mfclip'"):
        load_checkpoint(copy)


def test_weights_missing_truncated_or_corrupt(saved: Path, tmp_path: Path) -> None:
    copy = copy_checkpoint(saved, tmp_path)
    weights = copy / "model.safetensors"
    data = weights.read_bytes()

    weights.unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors is missing"):
        load_checkpoint(copy)

    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: truncated"):
        load_checkpoint(copy)

    flipped = bytearray(data)
    flipped[-10] ^= 0xFF
    weights.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(copy)

    # without a recorded size and checksum, safetensors itself catches a truncated file
    document = json.loads((copy / "config.json").read_text())
    del document["weights"]
    (copy / "config.json").write_text(json.dumps(document))
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated safetensors"):
        load_checkpoint(copy)
    weights.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt or truncated safetensors"):
        load_checkpoint(copy)


def test_weights_replaced_between_verifying_and_reading_are_refused(
    saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save into the directory (training exporting a better model) lands after the checksum was checked."""
    from mfclip.models import checkpoint

    copy = copy_checkpoint(saved, tmp_path)
    newer = save_checkpoint(tiny_model(seed=3), tmp_path / "newer")
    original = checkpoint.safetensors_shapes

    def replace_then_read(path: Path):
        os.replace(newer / "model.safetensors", copy / "model.safetensors")
        return original(path)

    monkeypatch.setattr(checkpoint, "safetensors_shapes", replace_then_read)
    with pytest.raises(CheckpointError, match="replaced while it was being loaded"):
        load_checkpoint(copy)


def test_shape_mismatch_names_the_key(saved: Path, tmp_path: Path) -> None:
    copy = copy_checkpoint(saved, tmp_path)
    document = json.loads((copy / "config.json").read_text())
    document["model"]["spa"]["hidden"] = 8
    (copy / "config.json").write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match=r"spa\.\S+: checkpoint has \(16.*model expects \(8"):
        load_checkpoint(copy)


def test_missing_and_unexpected_keys_are_listed(model: DetectorModel, saved: Path, tmp_path: Path) -> None:
    copy = copy_checkpoint(saved, tmp_path)
    document = json.loads((copy / "config.json").read_text())
    document["model"]["vision"]["noise_branch"] = False
    (copy / "config.json").write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match=r"unexpected keys: vision\.noise\..*more\)"):
        load_checkpoint(copy)
    loaded, _ = load_checkpoint(copy, strict=False)
    assert not loaded.config.vision.noise_branch

    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    with pytest.raises(CheckpointError, match=r"missing keys: head\."):
        load_state_dict_into(tiny_model(seed=2), state)


def test_unsafe_or_foreign_torch_files(tmp_path: Path) -> None:
    path = tmp_path / "obj.pt"
    torch.save(
        {"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {"model": {}}, "obj": os.stat_result}, path
    )
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint(path)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(text)


# ------------------------------------------------------------------------------------------------
# What config.json may point at, and what it may ask to build
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../outside/model.safetensors", "sub/model.safetensors", "/etc/passwd", "..\\outside.safetensors", ".."],
)
def test_weights_file_stays_inside_the_checkpoint(saved: Path, tmp_path: Path, name: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "model.safetensors").write_bytes((saved / "model.safetensors").read_bytes())
    copy = copy_checkpoint(saved, tmp_path)
    (copy / "sub").mkdir()
    (copy / "sub" / "model.safetensors").write_bytes((saved / "model.safetensors").read_bytes())
    document = json.loads((copy / "config.json").read_text())
    document["weights"]["file"] = name
    (copy / "config.json").write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match=r"weights\.file .* is not a file name inside the checkpoint"):
        load_checkpoint(copy)


def test_weights_record_fields_are_checked(saved: Path, tmp_path: Path) -> None:
    copy = copy_checkpoint(saved, tmp_path)
    document = json.loads((copy / "config.json").read_text())
    for key, value, message in [
        ("bytes", "12", "weights.bytes must be a byte count"),
        ("sha256", "abc", "weights.sha256 must be 64 hex digits"),
        ("file", "model.bin", "is not a .safetensors file"),
    ]:
        broken = json.loads(json.dumps(document))
        broken["weights"][key] = value
        (copy / "config.json").write_text(json.dumps(broken))
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(copy)


@pytest.fixture
def no_real_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail any model build that would allocate memory (one outside the meta device)."""
    from mfclip.models import registry

    builds: list[str] = []
    original = registry.model_from_config

    def guarded(config):
        device = torch.empty(0).device.type
        builds.append(device)
        if device != "meta":
            raise AssertionError("a model was allocated before its config was checked against the weights")
        return original(config)

    monkeypatch.setattr(registry, "model_from_config", guarded)
    return builds


def test_oversized_config_fails_before_allocation(
    saved: Path, tmp_path: Path, no_real_builds: list[str]
) -> None:
    copy = copy_checkpoint(saved, tmp_path)
    document = json.loads((copy / "config.json").read_text())
    document["model"]["vision"]["clip_vit"].update(width=1024, layers=24, heads=16)  # a ViT-L image tower
    (copy / "config.json").write_text(json.dumps(document))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(copy)
    message = str(err.value)
    assert "model expects (1024," in message and "model.vision.clip_vit.width" in message
    assert "nothing was allocated" in message
    assert no_real_builds == ["meta"]


def test_absurd_repetition_count_is_refused_before_building(
    saved: Path, tmp_path: Path, no_real_builds: list[str]
) -> None:
    copy = copy_checkpoint(saved, tmp_path)
    document = json.loads((copy / "config.json").read_text())
    document["model"]["text"]["layers"] = 10_000_000
    (copy / "config.json").write_text(json.dumps(document))
    with pytest.raises(
        CheckpointError, match=r"model\.text\.layers = 10000000 cannot describe model\.safetensors"
    ):
        load_checkpoint(copy)
    assert no_real_builds == []


def test_lightning_file_with_a_wrong_config_fails_before_allocation(
    model: DetectorModel, tmp_path: Path, no_real_builds: list[str]
) -> None:
    config = model.config.to_dict()
    config["text"]["width"] = 2048
    path = tmp_path / "x.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"model": config}}, path)
    with pytest.raises(CheckpointError, match=r"model expects \(.*2048"):
        load_checkpoint(path)
    assert no_real_builds == ["meta"]


def test_zero_stride_tensors_cannot_size_a_model_past_the_check(
    model: DetectorModel, tmp_path: Path, no_real_builds: list[str]
) -> None:
    """A few KB of pickle can describe every tensor of a wide model as a view of one value: refused."""
    config = model.config.to_dict()
    config["vision"]["clip_vit"].update(width=1024, heads=16)
    from mfclip.models.registry import config_from_dict, model_from_config

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in model_from_config(config_from_dict(config)).state_dict().items()}
    no_real_builds.clear()
    one = torch.zeros(())
    path = tmp_path / "wide.ckpt"
    torch.save(
        {"state_dict": {k: one.expand(s) for k, s in shapes.items()}, "hyper_parameters": {"model": config}},
        path,
    )
    assert path.stat().st_size < 200_000
    with pytest.raises(CheckpointError, match="is a view over only 1 stored values"):
        load_checkpoint(path)
    assert no_real_builds == []


def test_config_cannot_make_timm_read_other_weight_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``kwargs`` of a timm baseline reach ``timm.create_model``; ``checkpoint_path`` there would make timm
    read any file (by its own loader) while the checkpoint loads."""
    import timm.models._helpers

    model = create_model("cnn-tiny")
    directory = save_checkpoint(model, tmp_path / "cnn")
    other = tmp_path / "other.pth"
    torch.save(model.network.state_dict(), other)
    document = json.loads((directory / "config.json").read_text())
    document["model"]["kwargs"] = {"checkpoint_path": str(other)}
    (directory / "config.json").write_text(json.dumps(document))
    read: list[str] = []
    original = timm.models._helpers.load_state_dict
    monkeypatch.setattr(
        timm.models._helpers,
        "load_state_dict",
        lambda path, *a, **k: read.append(path) or original(path, *a, **k),
    )
    with pytest.raises(
        CheckpointError, match="checkpoint_path: timm arguments that load weights are not accepted"
    ):
        load_checkpoint(directory)
    assert read == []
