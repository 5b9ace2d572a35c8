"""Model registry: presets as data, overrides, type dispatch, CLIP weights, and the `mfclip models` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import Field
from torch import nn

from mfclip.models import registry
from mfclip.models.base import DetectorModel
from mfclip.models.config import ModelConfig
from mfclip.models.mfclip import MFCLIP
from mfclip.models.registry import (
    create_model,
    get_model_config,
    list_models,
    model_from_config,
    register_model_type,
)
from mfclip.utils.config import ConfigError, StrictConfig

MFCLIP_PRESETS = ["mfclip-cvit", "mfclip-cvit-release", "mfclip-cvit-tiny", "mfclip-tiny", "mfclip-vit-b16"]
# Presets small enough to build and run on the test machine (every bundled one is validated).
SMALL_PRESETS = [name for name in list_models() if get_model_config(name).image_size <= 64]


def test_presets_are_listed_and_filtered() -> None:
    names = list_models()
    assert set(MFCLIP_PRESETS) <= set(names) and names == sorted(names)
    assert list_models("mfclip-cvit*") == ["mfclip-cvit", "mfclip-cvit-release", "mfclip-cvit-tiny"]
    assert list_models("nothing-*") == []
    assert {"mfclip-tiny", "clip-probe-tiny", "cnn-tiny"} <= set(SMALL_PRESETS)


@pytest.mark.parametrize("name", list_models())
def test_every_preset_is_a_valid_model_config(name: str) -> None:
    config = get_model_config(name)
    assert config.name == name and config.type in registry.list_model_types()
    assert isinstance(config, registry.model_type(config.type).config_class)
    if name.startswith("mfclip-"):
        assert isinstance(config, ModelConfig)


@pytest.mark.parametrize("name", SMALL_PRESETS)
def test_small_presets_build_and_take_float32_pixels_in_bfloat16(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name).eval()
    size = model.image_size
    pixels = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model.predict_proba(pixels)
        half = model.to(torch.bfloat16).predict_proba(pixels)
    assert reference.shape == half.shape == (2,) and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), reference, rtol=0.0, atol=0.05)


def test_parameter_counts_are_sensible() -> None:
    vit = registry.model_summary("mfclip-vit-b16")
    cvit = registry.model_summary("mfclip-cvit")
    # ViT-B/16 image tower 86M + noise branch ~35M; CLIP text tower 63M.
    assert 115e6 < vit["inference_params"] < 125e6 and 180e6 < vit["params"] < 190e6
    # The released architecture: MVE ≈ 77.8M, ≈ 142M with the text tower.
    assert 77e6 < cvit["inference_params"] < 79e6 and 140e6 < cvit["params"] < 143e6
    assert registry.model_summary("mfclip-tiny")["params"] < 5e6


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown model 'mfclip-vit-b61'\. Did you mean 'mfclip-vit-b16'"
    ) as exc:
        create_model("mfclip-vit-b61")
    for name in list_models():
        assert name in str(exc.value)
    with pytest.raises(ConfigError, match=r"unknown model type 'nope'.*mfclip"):
        model_from_config({"type": "nope"})


def test_overrides_as_dotted_keys_and_nested_dicts() -> None:
    model = create_model("mfclip-tiny", **{"spa.mode": "matrix", "vision.noise.grid": 4})
    assert model.config.spa.mode == "matrix" and model.config.vision.noise.grid == 4
    model = create_model("mfclip-tiny", spa={"mode": "none"}, text={"pooling": "concat_last"}, embed_dim=32)
    assert model.spa is None and model.config.text.pooling == "concat_last"
    assert model.config.text.width == 64  # nested overrides merge, they do not replace the section
    assert model.head[1].in_features == 32
    with pytest.raises(ConfigError, match=r"unknown key 'spa\.mdoe'; did you mean 'mode'"):
        create_model("mfclip-tiny", **{"spa.mdoe": "none"})
    with pytest.raises(ConfigError, match=r"spa\.mode"):
        create_model("mfclip-tiny", spa={"mode": "bogus"})


def test_model_from_config_object_or_dict_and_files(tmp_path: Path) -> None:
    config = get_model_config("mfclip-tiny", **{"losses.kl": 0})
    assert isinstance(model_from_config(config), MFCLIP)
    model = model_from_config(config.to_dict())
    assert model.predictor is None
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert create_model(path).config == config
    assert create_model(str(path), image_size=32, **{"vision.clip_vit.patch_size": 4}).image_size == 32
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(
        json.dumps({"format": "mfclip-checkpoint", "format_version": 1, "model": config.to_dict()})
    )
    assert get_model_config(checkpoint) == config


class ToyConfig(StrictConfig):
    type: str = "toy_probe"
    name: str | None = None
    image_size: int = Field(default=32, gt=0)


class Toy(DetectorModel):
    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = nn.Linear(3, 2)


def test_other_model_types_register_into_the_builder_table() -> None:
    @register_model_type("toy_probe", ToyConfig)
    def build_toy(config: ToyConfig) -> Toy:
        return Toy(config)

    # The config class may also come from the annotation of a builder class.
    register_model_type("toy_class")(Toy)
    try:
        assert {"toy_probe", "toy_class"} <= set(registry.list_model_types())
        model = model_from_config({"type": "toy_probe", "image_size": 16})
        assert isinstance(model, Toy) and model.image_size == 16
        assert isinstance(model_from_config(ToyConfig(type="toy_class")), Toy)
        with pytest.raises(ConfigError, match="unknown key 'depth'"):
            model_from_config({"type": "toy_probe", "depth": 3})
        with pytest.raises(TypeError, match="annotate the first parameter"):
            register_model_type("toy_bad")(lambda config: Toy(config))
        with pytest.raises(ValueError, match="already registered"):
            register_model_type("toy_probe", ToyConfig)(lambda config: Toy(config))
    finally:
        for name in ("toy_probe", "toy_class"):
            registry._MODEL_TYPES.pop(name, None)


def test_clip_towers_have_the_standard_open_clip_keys() -> None:
    import open_clip

    with torch.device("meta"):
        ours = model_from_config(get_model_config("mfclip-vit-b16"))
        reference = open_clip.model.CLIP(**open_clip.get_model_config("ViT-B-16"))
    towers = ours.clip_towers()
    assert isinstance(towers["visual"], open_clip.transformer.VisionTransformer)
    assert isinstance(towers["text"], open_clip.transformer.TextTransformer)
    ref_state = reference.state_dict()
    visual = {f"visual.{k}": v.shape for k, v in towers["visual"].state_dict().items()}
    assert visual == {k: v.shape for k, v in ref_state.items() if k.startswith("visual.")}
    text = {k: v.shape for k, v in towers["text"].state_dict().items()}
    assert text == {
        k: v.shape for k, v in ref_state.items() if not k.startswith("visual.") and k != "logit_scale"
    }


def test_clip_weights_override_loads_into_the_towers(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = create_model("mfclip-tiny")
    towers = source.clip_towers()
    state = {f"visual.{k}": v for k, v in towers["visual"].state_dict().items()}
    state.update(towers["text"].state_dict())
    path = tmp_path / "tiny_clip.pt"
    torch.save(state, path)
    torch.manual_seed(2)
    loaded = create_model("mfclip-tiny", clip_weights=str(path))
    for name in ("visual", "text"):
        for key, value in towers[name].state_dict().items():
            torch.testing.assert_close(loaded.clip_towers()[name].state_dict()[key], value)


def test_cli_lists_models_and_shows_a_resolved_config(capsys: pytest.CaptureFixture[str]) -> None:
    from mfclip.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["models", "--pattern", "mfclip-tiny"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "mfclip-tiny" in out and "mfclip-vit-b16" not in out and "3.5M" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "--show", "mfclip-cvit-release"])
    assert exit_info.value.code == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert ModelConfig.from_dict(shown) == get_model_config("mfclip-cvit-release")
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "--show", "no-such-model"])
    assert exit_info.value.code == 2
    assert "Valid names" in capsys.readouterr().err
