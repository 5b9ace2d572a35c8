"""Baselines in the same harness: CLIP linear probe, CLIP fine-tune and a timm CNN."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from mfclip.models import registry
from mfclip.models.baselines import ClipBaseline, ClipBaselineConfig, TimmCNN, TimmCNNConfig
from mfclip.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mfclip.models.weights import load_clip_weights_into
from mfclip.utils.config import ConfigError

BASELINES = {
    "clip-probe-b16": ("clip_probe", 224, 85e6, 87e6),
    "clip-finetune-b16": ("clip_finetune", 224, 85e6, 87e6),
    "xception": ("timm_cnn", 299, 20e6, 22e6),
    "efficientnet-b4": ("timm_cnn", 380, 17e6, 18e6),
    "clip-probe-tiny": ("clip_probe", 64, 5e4, 5e5),
    "clip-finetune-tiny": ("clip_finetune", 64, 5e4, 5e5),
    "cnn-tiny": ("timm_cnn", 64, 1e6, 6e6),
}


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_presets_are_registered_models(name: str) -> None:
    model_type, size, low, high = BASELINES[name]
    assert name in registry.list_models()
    assert model_type in registry.list_model_types()
    info = registry.model_summary(name)
    assert info["type"] == model_type and info["image_size"] == size
    assert low < info["params"] < high
    assert info["inference_params"] == info["params"]  # no training-only parts


def _images(size: int = 64, batch: int = 3) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_clip_probe_trains_only_its_head() -> None:
    torch.manual_seed(0)
    model = registry.create_model("clip-probe-tiny")
    assert isinstance(model, ClipBaseline) and model.clip_towers()["text"] is None
    groups = model.parameter_groups()
    assert groups["pretrained"] == [] and {id(p) for p in groups["new"]} == {
        id(p) for p in model.head.parameters()
    }
    model.train()
    assert model.head.training and not model.visual.training  # frozen features, whatever the mode
    tower_before = {k: v.clone() for k, v in model.visual.state_dict().items()}
    head_before = model.head.weight.detach().clone()
    optimizer = torch.optim.Adam(groups["new"], lr=1e-2)
    output = model(_images())
    loss = model.compute_loss(output, torch.tensor([0, 1, 1]))["loss"]
    loss.backward()
    optimizer.step()
    assert all(torch.equal(v, model.visual.state_dict()[k]) for k, v in tower_before.items())
    assert not torch.equal(head_before, model.head.weight)


def test_clip_finetune_trains_a_loaded_tower_at_the_pretrained_rate() -> None:
    model = registry.create_model("clip-finetune-tiny")
    tower = {id(p) for p in model.visual.parameters()}
    head = {id(p) for p in model.head.parameters()}
    assert {id(p) for p in model.parameter_groups()["new"]} == tower | head  # randomly initialised
    load_clip_weights_into(model, {f"visual.{k}": v for k, v in model.visual.state_dict().items()})
    groups = model.parameter_groups()
    assert {id(p) for p in groups["pretrained"]} == tower
    assert {id(p) for p in groups["new"]} == head
    model.train()
    assert model.visual.training
    output = model(_images())
    assert output.logits.shape == (3, 2) and output.image_features.shape == (3, 64)
    model.compute_loss(output, torch.tensor([0, 1, 0]))["loss"].backward()
    assert model.visual.conv1.weight.grad is not None


def test_pretrained_clip_weights_load_into_the_baseline_tower(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = registry.create_model("clip-finetune-tiny")
    state = {f"visual.{k}": v.contiguous() for k, v in source.visual.state_dict().items()}
    path = tmp_path / "open_clip_model.safetensors"
    save_file(state, str(path))
    probe = registry.create_model("clip-probe-tiny", clip_weights=str(path))
    for key, value in source.visual.state_dict().items():
        assert torch.equal(probe.visual.state_dict()[key], value), key
    # The probe's features are the source tower's: same images, same embedding.
    images = _images()
    source.eval()
    probe.eval()
    assert torch.allclose(probe.features(images), source.features(images), atol=1e-6)


def test_timm_cnn_scores_images_and_reports_bad_input() -> None:
    model = registry.create_model("cnn-tiny").eval()
    assert isinstance(model, TimmCNN)
    p_fake = model.predict_proba(_images())
    assert p_fake.shape == (3,) and bool(((p_fake >= 0) & (p_fake <= 1)).all())
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\), got \(3, 3, 32, 32\)"):
        model(torch.rand(3, 3, 32, 32))
    with pytest.raises(ValueError, match="floating point"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    layers = model.explain_target_layers()
    assert len(layers) == 1 and isinstance(layers[0], torch.nn.Module)


def test_unknown_timm_architecture_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown timm model 'resnet10x'.*did you mean 'resnet10t'"):
        registry.create_model("cnn-tiny", arch="resnet10x")
    with pytest.raises(ConfigError, match="unknown key 'depth'"):
        registry.model_from_config({"type": "timm_cnn", "depth": 3})


def _imagenet_resnet10t(seed: int = 2) -> dict[str, torch.Tensor]:
    """The state dict of a timm resnet10t with an ImageNet-sized (1000-class) classifier."""
    import timm

    torch.manual_seed(seed)
    network = timm.create_model("resnet10t", pretrained=False, num_classes=1000)
    return {k: v.contiguous() for k, v in network.state_dict().items()}


def _save_safetensors(state: dict[str, torch.Tensor], path: Path) -> Path:
    from safetensors.torch import save_file

    save_file(state, str(path))
    return path


def test_timm_backbone_weights_load_strictly_without_their_imagenet_head(tmp_path: Path) -> None:
    state = _imagenet_resnet10t()
    path = _save_safetensors(state, tmp_path / "resnet10t.safetensors")
    torch.manual_seed(0)
    fresh_head = registry.create_model("cnn-tiny").network.fc.weight.detach().clone()
    torch.manual_seed(0)
    model = registry.create_model("cnn-tiny", backbone_weights=str(path))
    network = model.network.state_dict()
    assert all(torch.equal(network[k], v) for k, v in state.items() if not k.startswith("fc."))
    assert torch.equal(model.network.fc.weight, fresh_head)  # the model's own two-class head
    assert model.pretrained_towers == {"backbone"}
    groups = model.parameter_groups()
    head = {id(p) for p in model.network.fc.parameters()}
    assert {id(p) for p in groups["new"]} == head
    assert len(groups["pretrained"]) == sum(1 for _ in model.parameters()) - 2

    # A timm training checkpoint (weights under state_dict, DDP prefixes) loads the same way.
    checkpoint = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(checkpoint, tmp_path / "train.pth.tar")
    report = registry.create_model("cnn-tiny").load_backbone_weights(tmp_path / "train.pth.tar")
    assert report.loaded == len(state) - 2 and report.head_left_out == [
        "fc.weight (1000, 512)",
        "fc.bias (1000,)",
    ]
    assert "left out for the two-class head" in report.summary()


def test_partial_foreign_or_unsafe_timm_weights_are_refused_loudly(tmp_path: Path) -> None:
    state = _imagenet_resnet10t()
    model = registry.create_model("cnn-tiny")
    before = {k: v.clone() for k, v in model.network.state_dict().items()}

    def refused(weights: dict[str, torch.Tensor], name: str, match: str) -> None:
        path = _save_safetensors(weights, tmp_path / f"{name}.safetensors")
        with pytest.raises(CheckpointError, match=match):
            model.load_backbone_weights(path)
        after = model.network.state_dict()
        assert all(torch.equal(after[k], v) for k, v in before.items()), name  # nothing was loaded
        assert model.pretrained_towers == set()

    missing = {k: v for k, v in state.items() if k != "layer1.0.conv1.weight"}
    refused(missing, "missing", r"missing\.safetensors: .*1 missing keys: layer1\.0\.conv1\.weight")
    refused({**state, "extra.weight": torch.zeros(3)}, "extra", r"1 unexpected keys: extra\.weight")
    resized = {**state, "conv1.0.weight": torch.zeros(24, 3, 5, 5)}
    refused(resized, "resized", r"conv1\.0\.weight: checkpoint has \(24, 3, 5, 5\)")
    folder = tmp_path / "resnet18-repo"
    folder.mkdir()
    _save_safetensors(state, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"architecture": "resnet18"}))
    with pytest.raises(CheckpointError, match=r"weights of timm model 'resnet18'.*'resnet10t' \(arch\)"):
        model.load_backbone_weights(folder)
    with pytest.raises(CheckpointError, match=r"no such file or folder.*hf-hub:timm/NAME"):
        model.load_backbone_weights(tmp_path / "absent.safetensors")

    # timm's train.py stores its argparse.Namespace beside the weights: not loadable with weights_only
    torch.save({"state_dict": state, "args": argparse.Namespace(lr=0.1)}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        model.load_backbone_weights(tmp_path / "pickled.pth")
    with pytest.raises(ConfigError, match=r"backbone_weights: only timm_cnn models.*'clip_probe'"):
        registry.create_model("clip-probe-tiny", backbone_weights=str(folder))


def test_timm_weights_from_the_hub_cache_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    from hub_server import write_hub_cache

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    state = _imagenet_resnet10t()
    config = {
        "architecture": "resnet10t",
        "num_classes": 1000,
        "pretrained_cfg": {"tag": "c3_in1k", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    }
    write_hub_cache(
        cache,
        "timm/resnet10t.c3_in1k",
        {
            "model.safetensors": _save_safetensors(state, tmp_path / "w.safetensors"),
            "config.json": json.dumps(config).encode(),
        },
    )
    model = registry.create_model("cnn-tiny", backbone_weights="hf-hub:timm/resnet10t.c3_in1k")
    assert torch.equal(model.network.conv1[0].weight, state["conv1.0.weight"])
    report = registry.create_model("cnn-tiny").load_backbone_weights("hf-hub:timm/resnet10t.c3_in1k")
    assert report.file.endswith("model.safetensors") and len(report.warnings) == 1
    assert "normalised with mean/std ((0.5, 0.5, 0.5)" in report.warnings[0]  # cnn-tiny uses ImageNet's
    with pytest.raises(CheckpointError, match=r"not in the local Hugging Face cache and HF_HUB_OFFLINE=1"):
        registry.create_model("cnn-tiny", backbone_weights="hf-hub:timm/resnet18.a1_in1k")


def test_training_loads_backbone_weights_and_trains_them_at_the_pretrained_rate(tmp_path: Path) -> None:
    from mfclip.engine.config import OptimSection, TrainConfig
    from mfclip.engine.module import PRETRAINED_TOWERS_KEY, DetectorModule
    from mfclip.engine.train import build_model, check_config

    path = _save_safetensors(_imagenet_resnet10t(), tmp_path / "resnet10t.safetensors")
    config = TrainConfig.from_dict({"model": {"name": "cnn-tiny", "backbone_weights": str(path)}})
    model = build_model(config)
    assert model.pretrained_towers == {"backbone"}
    module = DetectorModule(model, OptimSection(lr=1e-3, lr_pretrained=1e-5, weight_decay=0.1))
    names = {group["name"]: group["lr"] for group in module.optimizer_groups()}
    assert names == {"pretrained": 1e-5, "pretrained_no_decay": 1e-5, "new": 1e-3, "new_no_decay": 1e-3}
    assert "backbone: pretrained group, lr 1e-05 (pretrained weights)" in module.describe_groups()
    # A resumed run rebuilds the model without the file; its checkpoint restores the groups.
    saved: dict = {"optimizer_states": [{}]}
    module.on_save_checkpoint(saved)
    assert saved[PRETRAINED_TOWERS_KEY] == ["backbone"]
    resumed = DetectorModule(build_model(config, load_clip_weights=False), module.optim)
    assert resumed.model.pretrained_towers == set()
    resumed.on_load_checkpoint(saved)
    assert [(g["name"], len(g["params"])) for g in resumed.optimizer_groups()] == [
        (g["name"], len(g["params"])) for g in module.optimizer_groups()
    ]
    wrong = TrainConfig.from_dict(
        {"model": {"name": "univfd-tiny", "backbone_weights": str(path)}, "data": {"manifest": "m.csv"}}
    )
    with pytest.raises(ConfigError, match=r"model\.backbone_weights: only timm_cnn models.*'univfd-tiny'"):
        check_config(wrong)


@pytest.mark.parametrize("name", ["clip-probe-tiny", "clip-finetune-tiny", "cnn-tiny"])
def test_baselines_round_trip_through_checkpoints(name: str, tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = registry.create_model(name).eval()
    images = _images()
    expected = model.predict_proba(images)
    save_checkpoint(model, tmp_path / "ckpt", metadata={"synthetic": True})
    loaded, metadata = load_checkpoint(tmp_path / "ckpt")
    assert type(loaded) is type(model) and metadata.synthetic is True
    assert loaded.config == model.config
    assert torch.allclose(loaded.eval().predict_proba(images), expected, atol=1e-6)
    # fine-tuning a trained detector: its network counts as loaded (the pretrained learning rate)
    assert loaded.pretrained_towers == ({"backbone"} if name == "cnn-tiny" else {"visual"})


def test_configs_validate_their_fields() -> None:
    assert ClipBaselineConfig(type="clip_probe").frozen_backbone
    assert not ClipBaselineConfig(type="clip_finetune").frozen_backbone
    with pytest.raises(ConfigError, match="normalize"):
        TimmCNNConfig.from_dict({"normalize": "zscore"})
    with pytest.raises(ConfigError, match="image_size"):
        registry.model_from_config(
            {
                "type": "clip_probe",
                "image_size": 60,
                "clip_vit": {"arch": None, "width": 32, "layers": 1, "heads": 2, "patch_size": 8},
            }
        )
