"""Pretrained CLIP weights: every supported format is written here at tiny size, then loaded into towers.

Each test proves the loaded towers compute exactly what the source model computes.
"""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU, TextTransformer, VisionTransformer
from safetensors.torch import save_file
from torch import nn

from mfclip.models.checkpoint import CheckpointError
from mfclip.models.weights import (
    describe_clip_weights,
    load_clip_state_dict,
    load_clip_weights_into,
    read_clip_weights,
)

EMBED = 32
VISION_CFG = dict(image_size=32, layers=1, width=32, head_width=16, patch_size=8)
TEXT_CFG = dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1)


def perturb_(module: nn.Module, seed: int) -> nn.Module:
    """Give every parameter (LayerNorms included) distinct random values, so a wrong mapping shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=gen))
    return module


def tiny_clip(quick_gelu: bool = True, seed: int = 0) -> open_clip.CLIP:
    torch.manual_seed(seed)
    model = open_clip.CLIP(embed_dim=EMBED, vision_cfg=VISION_CFG, text_cfg=TEXT_CFG, quick_gelu=quick_gelu)
    return perturb_(model, seed).eval()


def tiny_towers(
    quick_gelu: bool = True, image_size: int = 32, width: int = 32, heads: int = 2, context: int = 77
) -> dict[str, nn.Module]:
    """Standalone towers built as open_clip's _build_vision_tower / _build_text_tower build them."""
    act = QuickGELU if quick_gelu else nn.GELU
    torch.manual_seed(123)
    visual = VisionTransformer(
        image_size=image_size,
        patch_size=8,
        width=width,
        layers=1,
        heads=heads,
        mlp_ratio=4.0,
        output_dim=EMBED,
        act_layer=act,
    )
    text = TextTransformer(
        context_length=context,
        vocab_size=49408,
        width=width,
        heads=heads,
        layers=1,
        output_dim=EMBED,
        act_layer=act,
    )
    return {"visual": visual.eval(), "text": text.eval()}


def random_tokens(batch: int = 3, length: int = 77) -> torch.Tensor:
    """CLIP-like token rows: start token, random words, end token (the row maximum), zero padding."""
    gen = torch.Generator().manual_seed(7)
    rows = torch.zeros(batch, length, dtype=torch.long)
    for i in range(batch):
        n = 4 + 3 * i
        rows[i, 0] = 49406
        rows[i, 1 : n + 1] = torch.randint(1, 49405, (n,), generator=gen)
        rows[i, n + 1] = 49407
    return rows


IMAGES = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
TOKENS = random_tokens()


def assert_towers_match_clip(towers: dict[str, nn.Module], source: open_clip.CLIP) -> None:
    with torch.no_grad():
        torch.testing.assert_close(towers["visual"](IMAGES), source.encode_image(IMAGES), atol=1e-5, rtol=0)
        torch.testing.assert_close(towers["text"](TOKENS), source.encode_text(TOKENS), atol=1e-5, rtol=0)


def assert_changed(towers: dict[str, nn.Module], source: open_clip.CLIP) -> None:
    """Guard: before loading, the target towers compute something else."""
    with torch.no_grad():
        assert not torch.allclose(towers["visual"](IMAGES), source.encode_image(IMAGES), atol=1e-3)


@pytest.fixture(scope="module")
def source() -> open_clip.CLIP:
    return tiny_clip(quick_gelu=True)


class _OpenAIArchive(nn.Module):
    """A CLIP's tensors under OpenAI's key names, plus the three extra buffers OpenAI's archives carry."""

    def __init__(self, clip: open_clip.CLIP) -> None:
        super().__init__()
        self.visual = clip.visual
        self.transformer = clip.transformer
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.logit_scale = clip.logit_scale
        self.register_buffer("input_resolution", torch.tensor(32))
        self.register_buffer("context_length", torch.tensor(77))
        self.register_buffer("vocab_size", torch.tensor(49408))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image)


def write_openai_torchscript(clip: open_clip.CLIP, path: Path) -> Path:
    """A TorchScript archive like OpenAI's ViT-B-16.pt: traced, saved with torch.jit.save."""
    with torch.no_grad():
        traced = torch.jit.trace(_OpenAIArchive(clip), IMAGES[:1], check_trace=False)
    torch.jit.save(traced, str(path))
    return path


# ------------------------------------------------------------------------------------------------
# Formats
# ------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_openai_torchscript_archive(tmp_path: Path, source: open_clip.CLIP) -> None:
    path = write_openai_torchscript(source, tmp_path / "ViT-tiny.pt")
    weights = read_clip_weights(path)
    assert weights.source_format == "openai-torchscript"
    assert weights.quick_gelu is True
    assert not {"input_resolution", "context_length", "vocab_size"} & set(weights.state_dict)

    towers = tiny_towers()
    assert_changed(towers, source)
    report = load_clip_weights_into(towers, path)
    assert_towers_match_clip(towers, source)
    assert report.loaded == {
        "visual": len(towers["visual"].state_dict()),
        "text": len(towers["text"].state_dict()),
    }
    assert report.skipped == ["logit_scale"]
    assert "openai-torchscript" in report.summary()


class _ScriptedState(nn.Module):
    """A module whose scripted __setstate__ (run by torch.jit.load) announces itself."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight.sum()

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        print("scripted __setstate__ ran")
        self.weight = state[0]
        self.training = state[1]


class _ArchiveWithScriptedState(_OpenAIArchive):
    def __init__(self, clip: open_clip.CLIP) -> None:
        super().__init__(clip)
        self.extra = _ScriptedState()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.extra(self.visual(image))


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_archives_are_read_without_running_them(
    tmp_path: Path, source: open_clip.CLIP, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    plain = write_openai_torchscript(source, tmp_path / "ViT-tiny.pt")
    with torch.no_grad():
        scripted = torch.jit.script(_ArchiveWithScriptedState(source))
    torch.jit.save(scripted, str(tmp_path / "scripted-state.pt"))

    def refuse(*args, **kwargs):
        raise AssertionError("torch.jit.load runs the archive's code")

    monkeypatch.setattr(torch.jit, "load", refuse)
    towers = tiny_towers()
    load_clip_weights_into(towers, plain)  # tensors straight from the zip
    assert_towers_match_clip(towers, source)
    with pytest.raises(
        CheckpointError, match=r"scripted __setstate__, which mfclip does not run.*safetensors"
    ):
        read_clip_weights(tmp_path / "scripted-state.pt")
    assert "scripted __setstate__ ran" not in capfd.readouterr().out


def test_openai_plain_state_dict_in_half_precision(tmp_path: Path) -> None:
    source = tiny_clip()
    with torch.no_grad():  # make every value exactly representable in float16
        for param in source.parameters():
            param.copy_(param.half().float())
    path = tmp_path / "ViT-tiny-openai-state.pt"
    torch.save({k: v.half() for k, v in source.state_dict().items()}, path)

    towers = tiny_towers()
    load_clip_weights_into(towers, path)
    assert towers["visual"].conv1.weight.dtype == torch.float32
    assert_towers_match_clip(towers, source)


@pytest.mark.parametrize("layout", ["training-checkpoint", "custom-text"])
def test_open_clip_pt_checkpoint(tmp_path: Path, source: open_clip.CLIP, layout: str) -> None:
    state = source.state_dict()
    if layout == "training-checkpoint":
        # open_clip's trainer saves {"epoch", "name", "state_dict": {"module.*"}, "optimizer"}
        payload = {
            "epoch": 3,
            "name": "tiny",
            "state_dict": {f"module.{k}": v for k, v in state.items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
        }
    else:
        # CustomTextCLIP keeps the text tower under "text."
        payload = {
            (f"text.{k}" if not k.startswith(("visual.", "logit_")) else k): v for k, v in state.items()
        }
    path = tmp_path / "epoch_3.pt"
    torch.save(payload, path)

    towers = tiny_towers()
    load_clip_weights_into(towers, path)
    assert_towers_match_clip(towers, source)


def test_open_clip_safetensors_file(tmp_path: Path, source: open_clip.CLIP) -> None:
    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    assert set(load_clip_state_dict(path)) == set(source.state_dict())

    towers = tiny_towers()
    report = load_clip_weights_into(towers, path)
    assert report.source_format == "safetensors"
    assert_towers_match_clip(towers, source)


def write_open_clip_dir(clip: open_clip.CLIP, directory: Path, quick_gelu: bool = True) -> Path:
    directory.mkdir()
    model_cfg = {"embed_dim": EMBED, "vision_cfg": VISION_CFG, "text_cfg": TEXT_CFG, "quick_gelu": quick_gelu}
    config = {"model_cfg": model_cfg, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}
    (directory / "open_clip_config.json").write_text(json.dumps(config))
    save_file(
        {k: v.contiguous() for k, v in clip.state_dict().items()},
        str(directory / "open_clip_model.safetensors"),
    )
    return directory


def test_open_clip_local_dir(tmp_path: Path, source: open_clip.CLIP) -> None:
    directory = write_open_clip_dir(source, tmp_path / "tiny-open-clip")
    # The folder is a genuine open_clip folder: open_clip itself loads it.
    reference = open_clip.create_model(f"local-dir:{directory}").eval()
    with torch.no_grad():
        torch.testing.assert_close(reference.encode_image(IMAGES), source.encode_image(IMAGES))

    weights = read_clip_weights(f"local-dir:{directory}")
    assert (weights.source_format, weights.quick_gelu, weights.vision_heads, weights.text_heads) == (
        "open_clip-dir",
        True,
        2,
        2,
    )
    towers = tiny_towers()
    load_clip_weights_into(towers, directory)
    assert_towers_match_clip(towers, source)


def test_open_clip_dir_activation_mismatch(tmp_path: Path) -> None:
    gelu_source = tiny_clip(quick_gelu=False)
    directory = write_open_clip_dir(gelu_source, tmp_path / "gelu", quick_gelu=False)
    with pytest.raises(CheckpointError, match="uses QuickGELU but the checkpoint was trained with GELU"):
        load_clip_weights_into(tiny_towers(quick_gelu=True), directory)
    towers = tiny_towers(quick_gelu=False)
    load_clip_weights_into(towers, directory)
    assert_towers_match_clip(towers, gelu_source)


@pytest.fixture(scope="module")
def hf_clip():
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(
            hidden_size=32,
            intermediate_size=128,
            num_attention_heads=2,
            num_hidden_layers=1,
            max_position_embeddings=77,
            vocab_size=49408,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=128,
            num_attention_heads=2,
            num_hidden_layers=1,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=EMBED,
    )
    model = CLIPModel(config)
    return perturb_(model, 1).eval()


def _features(output):
    # transformers 5.x returns an output object whose pooler_output is the projected embedding
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@pytest.mark.parametrize("weights_file", ["model.safetensors", "pytorch_model.bin"])
def test_huggingface_clip_directory(tmp_path: Path, hf_clip, weights_file: str) -> None:
    directory = tmp_path / "hf-tiny-clip"
    hf_clip.save_pretrained(directory)
    if weights_file == "pytorch_model.bin":
        (directory / "model.safetensors").unlink()
        torch.save(hf_clip.state_dict(), directory / "pytorch_model.bin")

    weights = read_clip_weights(directory)
    assert weights.source_format == "huggingface-dir"
    assert weights.quick_gelu is True
    towers = tiny_towers(quick_gelu=True)
    report = load_clip_weights_into(towers, directory)
    assert set(report.loaded) == {"visual", "text"}
    with torch.no_grad():
        expected_image = _features(hf_clip.get_image_features(pixel_values=IMAGES))
        expected_text = _features(hf_clip.get_text_features(input_ids=TOKENS))
        torch.testing.assert_close(towers["visual"](IMAGES), expected_image, atol=1e-5, rtol=0)
        torch.testing.assert_close(towers["text"](TOKENS), expected_text, atol=1e-5, rtol=0)

    # the converted state dict also loads into an open_clip CLIP with strict key matching
    clip = tiny_clip()
    clip.load_state_dict(weights.state_dict, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(clip.encode_image(IMAGES), expected_image, atol=1e-5, rtol=0)


def test_sharded_huggingface_directory_stays_in_its_folder(tmp_path: Path, hf_clip) -> None:
    from safetensors.torch import save_file

    directory = tmp_path / "hf-sharded"
    hf_clip.save_pretrained(directory)
    (directory / "model.safetensors").unlink()
    state = {k: v.contiguous() for k, v in hf_clip.state_dict().items()}
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in shards.items():
        save_file({k: state[k] for k in part}, str(directory / name))
    index = directory / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {k: name for name, part in shards.items() for k in part}}))
    assert set(read_clip_weights(directory).state_dict) == set(read_clip_weights(state).state_dict)

    # an index naming a file outside the folder is refused, though the file exists
    (directory / "model-00002-of-00002.safetensors").rename(tmp_path / "outside.safetensors")
    weight_map = {k: name for name, part in shards.items() for k in part}
    weight_map |= {k: "../outside.safetensors" for k in shards["model-00002-of-00002.safetensors"]}
    index.write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointError, match=r"shard name '\.\./outside\.safetensors' is not a file name"):
        read_clip_weights(directory)


def test_hub_ids_resolve_through_the_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hf_clip, source: open_clip.CLIP
) -> None:
    """``hf-hub:`` ids of both Hub layouts read from a Hugging Face cache the test writes, offline."""
    from huggingface_hub import constants

    from hub_server import write_hub_cache

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    hf_dir = tmp_path / "hf"
    hf_clip.save_pretrained(hf_dir)
    files = {name: hf_dir / name for name in ("config.json", "model.safetensors")}
    write_hub_cache(cache, "openai/clip-tiny", files)
    open_clip_dir = write_open_clip_dir(source, tmp_path / "oc")
    oc_files = {p.name: p for p in open_clip_dir.iterdir()}
    write_hub_cache(cache, "timm/tiny-clip", oc_files, revision="v1")

    towers = tiny_towers()
    report = load_clip_weights_into(towers, "hf-hub:openai/clip-tiny")
    assert report.source == "hf-hub:openai/clip-tiny" and report.source_format == "huggingface-dir"
    with torch.no_grad():
        expected = _features(hf_clip.get_image_features(pixel_values=IMAGES))
        torch.testing.assert_close(towers["visual"](IMAGES), expected, atol=1e-5, rtol=0)
    with pytest.raises(CheckpointError, match=r"CLIP weights not found .* write hf-hub:openai/clip-tiny$"):
        load_clip_state_dict("openai/clip-tiny")  # a local path: only hf-hub: ids reach the Hub (cache)

    towers = tiny_towers()
    assert load_clip_weights_into(towers, "hf-hub:timm/tiny-clip@v1").source_format == "open_clip-dir"
    assert_towers_match_clip(towers, source)
    with pytest.raises(CheckpointError, match="not available offline"):
        load_clip_state_dict("hf-hub:timm/tiny-clip")  # only the v1 ref is cached


def test_huggingface_into_gelu_towers_is_refused(tmp_path: Path, hf_clip) -> None:
    hf_clip.save_pretrained(tmp_path / "hf")
    with pytest.raises(CheckpointError, match="QuickGELU") as err:
        load_clip_weights_into(tiny_towers(quick_gelu=False), tmp_path / "hf")
    assert "quick_gelu" in str(err.value)
    report = load_clip_weights_into(tiny_towers(quick_gelu=False), tmp_path / "hf", strict=False)
    assert any("QuickGELU" in w for w in report.warnings)


def test_head_count_mismatch_is_refused(tmp_path: Path, hf_clip) -> None:
    hf_clip.save_pretrained(tmp_path / "hf")
    with pytest.raises(CheckpointError, match="4 attention heads, the checkpoint's has 2"):
        load_clip_weights_into(tiny_towers(heads=4), tmp_path / "hf")


def test_into_open_clip_clip_and_detector_like_objects(tmp_path: Path, source: open_clip.CLIP) -> None:
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = tiny_clip(seed=5)
    report = load_clip_weights_into(target, path)
    assert report.skipped == ["logit_scale"]
    with torch.no_grad():
        torch.testing.assert_close(target.encode_text(TOKENS), source.encode_text(TOKENS), atol=1e-5, rtol=0)

    class HasTowers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.towers = nn.ModuleDict(tiny_towers())

        def clip_towers(self) -> dict[str, nn.Module | None]:
            return {"visual": self.towers["visual"], "text": None}

    holder = HasTowers()
    report = load_clip_weights_into(holder, path)
    assert set(report.loaded) == {"visual"}
    assert "token_embedding.weight" in report.skipped
    with torch.no_grad():
        torch.testing.assert_close(
            holder.towers["visual"](IMAGES), source.encode_image(IMAGES), atol=1e-5, rtol=0
        )


# ------------------------------------------------------------------------------------------------
# Adapting and refusing shapes
# ------------------------------------------------------------------------------------------------


def test_shape_mismatch_names_key_shapes_and_architectures(source: open_clip.CLIP) -> None:
    with pytest.raises(CheckpointError) as err:
        load_clip_weights_into(tiny_towers(width=64), source.state_dict())
    message = str(err.value)
    assert "visual.conv1.weight: checkpoint has (32, 3, 8, 8), model expects (64, 3, 8, 8)" in message
    assert "image tower is ViT width 32, 1 layers, patch 8, 32 px" in message
    assert "the model's is ViT width 64" in message
    # nothing was half-loaded
    towers = tiny_towers(width=64)
    before = {k: v.clone() for k, v in towers["text"].state_dict().items()}
    with pytest.raises(CheckpointError):
        load_clip_weights_into(towers, source.state_dict())
    assert all(torch.equal(before[k], v) for k, v in towers["text"].state_dict().items())


def test_image_size_change_interpolates_positions(source: open_clip.CLIP) -> None:
    towers = tiny_towers(image_size=64)
    report = load_clip_weights_into(towers, source.state_dict())
    assert any("interpolated from a 4x4 to a 8x8 grid" in a for a in report.adapted)
    pos = towers["visual"].positional_embedding
    assert pos.shape == (65, 32)
    torch.testing.assert_close(pos[0], source.visual.positional_embedding[0])
    with torch.no_grad():  # everything else is the source's, so the text side is unchanged
        torch.testing.assert_close(towers["text"](TOKENS), source.encode_text(TOKENS), atol=1e-5, rtol=0)
        assert towers["visual"](torch.rand(1, 3, 64, 64)).shape == (1, EMBED)


def test_shorter_text_context_takes_the_first_positions(source: open_clip.CLIP) -> None:
    towers = tiny_towers(context=16)
    report = load_clip_weights_into(towers, source.state_dict())
    assert any("truncated from 77 to the first 16" in a for a in report.adapted)
    with torch.no_grad():
        torch.testing.assert_close(
            towers["text"](TOKENS[:, :16]), source.encode_text(TOKENS)[:, :], atol=1e-5, rtol=0
        )


def test_checkpoint_without_text_tower(source: open_clip.CLIP) -> None:
    vision_only = {k: v for k, v in source.state_dict().items() if k.startswith("visual.")}
    with pytest.raises(CheckpointError, match="holds no text tower weights"):
        load_clip_weights_into(tiny_towers(), vision_only)
    towers = tiny_towers()
    report = load_clip_weights_into(towers, vision_only, strict=False)
    assert set(report.loaded) == {"visual"}
    assert "token_embedding.weight" in report.missing["text"]


def test_missing_and_unexpected_tensors_are_listed(source: open_clip.CLIP) -> None:
    state = dict(source.state_dict())
    del state["visual.ln_post.weight"]
    state["visual.extra_head.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError) as err:
        load_clip_weights_into(tiny_towers(), state)
    assert "ln_post.weight" in str(err.value)
    assert "extra_head.weight" in str(err.value)
    report = load_clip_weights_into(tiny_towers(), state, strict=False)
    assert report.missing["visual"] == ["ln_post.weight"]
    assert "visual.extra_head.weight" in report.skipped


def test_describe_clip_weights(source: open_clip.CLIP) -> None:
    text = describe_clip_weights(source.state_dict())
    assert "image tower: ViT width 32, 1 layers, patch 8, 32 px, embed dim 32" in text
    assert "text tower: width 32, 1 layers, vocabulary 49408, context 77, embed dim 32" in text


# ------------------------------------------------------------------------------------------------
# Bad sources
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "hf-hub:openai/clip-vit-base-patch16",
        "hf-hub:timm/vit_base_patch16_clip_224.openai",
        "ViT-B-16/openai",
    ],
)
def test_hub_names_fail_fast_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="not available offline") as err:
        load_clip_state_dict(name)
    assert time.monotonic() - start < 10
    assert name in str(err.value) and "local file or folder" in str(err.value)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_clip_state_dict(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"definitely not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match=r"garbage\.pt"):
        load_clip_state_dict(garbage)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match=r"broken\.safetensors"):
        load_clip_state_dict(broken)
    with pytest.raises(CheckpointError, match="not a CLIP weights folder"):
        load_clip_state_dict(tmp_path)
    hf_other = tmp_path / "bert"
    hf_other.mkdir()
    (hf_other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="'bert' is not a Hugging Face CLIP model"):
        load_clip_state_dict(hf_other)
    unrelated = tmp_path / "resnet.pt"
    torch.save({"conv.weight": torch.zeros(2)}, unrelated)
    with pytest.raises(CheckpointError, match="no CLIP weights found"):
        load_clip_state_dict(unrelated)


class _Payload:
    def __reduce__(self):  # runs on unsafe unpickling
        return (print, ("unsafe unpickling ran",))


def test_pickles_with_code_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"visual.conv1.weight": _Payload()}, handle, protocol=2)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_clip_state_dict(path)


# ------------------------------------------------------------------------------------------------
# Through the model registry
# ------------------------------------------------------------------------------------------------


def test_create_model_with_clip_weights(tmp_path: Path) -> None:
    """``create_model(..., clip_weights=PATH)`` fills MFCLIP's towers; mfclip-tiny's towers are GELU."""
    from mfclip.models.registry import create_model

    torch.manual_seed(0)
    source = open_clip.CLIP(
        embed_dim=64,
        vision_cfg=dict(image_size=64, layers=2, width=64, head_width=32, patch_size=8),
        text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
        quick_gelu=False,
    )
    perturb_(source, 2).eval()
    directory = tmp_path / "tiny64"
    directory.mkdir()
    model_cfg = {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
        "text_cfg": {"width": 64, "heads": 2, "layers": 2},
    }
    (directory / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    save_file(
        {k: v.contiguous() for k, v in source.state_dict().items()},
        str(directory / "open_clip_model.safetensors"),
    )

    model = create_model("mfclip-tiny", clip_weights=str(directory)).eval()
    towers = model.clip_towers()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(towers["visual"](images), source.encode_image(images), atol=1e-5, rtol=0)
        torch.testing.assert_close(towers["text"](TOKENS), source.encode_text(TOKENS), atol=1e-5, rtol=0)

    # the same weights into a QuickGELU variant are refused with the fix in the message
    with pytest.raises(CheckpointError, match="uses QuickGELU but the checkpoint was trained with GELU"):
        create_model("mfclip-tiny", clip_weights=str(directory), **{"vision.clip_vit.quick_gelu": True})


@pytest.fixture(scope="module")
def tiny_mfclip_clip_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both towers of an mfclip-tiny model saved as an open_clip-layout state dict."""
    from mfclip.models.registry import create_model

    torch.manual_seed(3)
    towers = create_model("mfclip-tiny").clip_towers()
    state = {f"visual.{k}": v for k, v in towers["visual"].state_dict().items()}
    state.update(towers["text"].state_dict())
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    torch.save(state, path)
    return path


def test_image_weights_without_an_image_tower_are_refused(tiny_mfclip_clip_file: Path) -> None:
    from mfclip.models.registry import create_model

    cvit = {"vision.global_branch": "cvit"}
    with pytest.raises(CheckpointError) as err:
        create_model("mfclip-tiny", clip_weights=str(tiny_mfclip_clip_file), **cvit)
    message = str(err.value)
    assert str(tiny_mfclip_clip_file) in message
    assert "image tower tensors (visual.*) have no place" in message and "strict=False" in message
    # non-strict: the text tower is loaded and the dropped image tower is reported
    model = create_model("mfclip-tiny", **cvit)
    report = load_clip_weights_into(model, tiny_mfclip_clip_file, strict=False)
    assert set(report.loaded) == {"text"}
    assert any("image tower tensors" in w for w in report.warnings)


def test_weights_that_fit_no_tower_are_always_refused(tiny_mfclip_clip_file: Path) -> None:
    from mfclip.models.registry import create_model

    model = create_model("mfclip-tiny", **{"vision.global_branch": "cvit", "losses.cmc": 0, "losses.kl": 0})
    for strict in (True, False):
        with pytest.raises(CheckpointError) as err:
            load_clip_weights_into(model, tiny_mfclip_clip_file, strict=strict)
        message = str(err.value)
        assert message.startswith(f"{tiny_mfclip_clip_file}: nothing to load")
        assert "image tower tensors" in message and "text tower tensors" in message


def test_text_weights_are_noted_when_the_model_has_no_text_tower(
    tiny_mfclip_clip_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from mfclip.models.registry import create_model

    with caplog.at_level("INFO", logger="mfclip.models.registry"):
        model = create_model(
            "mfclip-tiny", clip_weights=str(tiny_mfclip_clip_file), **{"losses.cmc": 0, "losses.kl": 0}
        )
    assert model.text is None
    assert "into visual (" in caplog.text
    assert "the model has no text tower: the checkpoint's 29 text tower tensors were not used" in caplog.text
    source = torch.load(tiny_mfclip_clip_file)
    loaded = model.clip_towers()["visual"].state_dict()
    assert all(
        torch.equal(loaded[k[len("visual.") :]], v) for k, v in source.items() if k.startswith("visual.")
    )


def test_full_size_mismatch_suggests_open_clip_architectures() -> None:
    """ViT-B/32 weights into a ViT-B/16 model, with both built on the meta device (no memory used)."""

    def meta_clip(name: str) -> open_clip.CLIP:
        with torch.device("meta"):
            return open_clip.CLIP(**open_clip.get_model_config(name))

    b16, b32 = meta_clip("ViT-B-16"), meta_clip("ViT-B-32")
    with pytest.raises(CheckpointError) as err:
        load_clip_weights_into(b16, b32.state_dict())
    message = str(err.value)
    assert "visual.conv1.weight: checkpoint has (768, 3, 32, 32), model expects (768, 3, 16, 16)" in message
    assert "ViT width 768, 12 layers, patch 32, 224 px, embed dim 512" in message
    assert "(open_clip: ViT-B-32, ViT-B-32-256, ViT-B-32-quickgelu)" in message
    assert "matching open_clip architectures: ViT-B-16, ViT-B-16-quickgelu" in describe_clip_weights(
        b16.state_dict()
    )
