"""Baselines in the same harness: CLIP linear probe, CLIP fine-tune and a timm CNN."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mfclip.models import registry
from mfclip.models.baselines import ClipBaseline, ClipBaselineConfig, TimmCNN, TimmCNNConfig
from mfclip.models.checkpoint import load_checkpoint, save_checkpoint
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


def test_timm_backbone_weights_load_without_their_imagenet_head(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(2)
    imagenet = timm.create_model("resnet10t", pretrained=False, num_classes=1000)
    path = tmp_path / "resnet10t.safetensors"
    save_file({k: v.contiguous() for k, v in imagenet.state_dict().items()}, str(path))
    model = registry.create_model("cnn-tiny")
    report = model.load_backbone_weights(path)
    assert report["missing"] == ["fc.bias", "fc.weight"] and report["unexpected"] == []
    assert torch.equal(model.network.conv1[0].weight, imagenet.conv1[0].weight)
    assert model.network.fc.weight.shape == (2, 512)


@pytest.mark.parametrize("name", ["clip-probe-tiny", "clip-finetune-tiny", "cnn-tiny"])
def test_baselines_round_trip_through_checkpoints(name: str, tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = registry.create_model(name).eval()
    images = _images()
    expected = model.predict_proba(images)
    save_checkpoint(model, tmp_path / "ckpt", metadata={"synthetic": True})
    loaded, metadata = load_checkpoint(tmp_path / "ckpt")
    assert type(loaded) is type(model) and metadata["synthetic"] is True
    assert loaded.config == model.config
    assert torch.allclose(loaded.eval().predict_proba(images), expected, atol=1e-6)


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
