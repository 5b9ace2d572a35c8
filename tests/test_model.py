"""MFCLIP model: every switch builds, runs and trains; inference never touches the text tower."""

from __future__ import annotations

import pytest
import torch

from mfclip.models.base import ModelOutput
from mfclip.models.mfclip import MFCLIP
from mfclip.models.registry import create_model
from mfclip.prompts import load_prompt_set, tokenize
from mfclip.utils.config import ConfigError

LABELS = [
    (0, None, None, None),
    (1, None, None, "SDXL"),
    (1, None, None, "DiffFace"),
    (1, "face_swap", None, None),
    (0, None, None, None),
    (1, None, None, "Imagic"),
]
CVIT = {"vision.global_branch": "cvit"}
RELEASE_QUIRKS = {
    "vision.global_branch": "cvit",
    "vision.release_input": True,
    "vision.cvit.batch_position_embedding": True,
    "vision.cvit.attention_scale": "model_dim",
    "vision.noise.batch_position_embedding": True,
    "vision.noise.attention_scale": "model_dim",
    "text.pooling": "concat_first",
    "text.concat_positions": "independent",
    "spa.mode": "matrix",
}


def prompt_batch(specs=LABELS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    prompt_set = load_prompt_set()
    rows = [prompt_set.prompts_for(*spec) for spec in specs]
    tokens = torch.stack([tokenize(prompts) for prompts, _ in rows])
    mask = torch.tensor([known for _, known in rows])
    labels = torch.tensor([spec[0] for spec in specs])
    return tokens, mask, labels


def images(batch: int = len(LABELS), size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


SWITCHES = {
    "default": {},
    "concat_last": {"text.pooling": "concat_last"},
    "concat_first": {"text.pooling": "concat_first"},
    "concat_independent": {"text.pooling": "concat_last", "text.concat_positions": "independent"},
    "learned_fusion_fixed_temperature": {"text.level_fusion": "learned", "losses.learn_temperature": False},
    "level1_only": {"text.levels": [1]},
    "image_only": {"vision.noise_branch": False},
    "noise_only": {"vision.image_branch": False},
    "concat_fusion": {"vision.fusion": "concat"},
    "no_normalize": {"vision.normalize": "none"},
    "cvit": CVIT,
    "release_quirks": RELEASE_QUIRKS,
    "random_patch": {"vision.noise.patch_mode": "random"},
    "whole_patch": {"vision.noise.patch_mode": "whole"},
    "fixed_patch_srm_byte": {"vision.noise.patch_mode": 3, "vision.noise.srm_input_scale": "byte"},
    "spa_matrix": {"spa.mode": "matrix"},
    "spa_none": {"spa.mode": "none"},
    "no_cmc": {"losses.cmc": 0.0},
    "no_kl": {"losses.kl": 0.0},
    "ce_only": {"losses.cmc": 0.0, "losses.kl": 0.0},
    "no_ce": {"losses.ce": 0.0},
    "weighted_losses": {"losses.ce": 0.5, "losses.cmc": 0.5, "losses.kl": 2.0},
    "kl_not_detached": {"losses.kl_detach_text": False, "losses.cmc": 0.0},
    "frozen_text": {"text.freeze": True},
}


@pytest.mark.parametrize("switch", list(SWITCHES))
def test_every_switch_runs_and_every_trainable_parameter_gets_a_gradient(switch: str) -> None:
    torch.manual_seed(0)
    model = create_model("mfclip-tiny", **SWITCHES[switch])
    model.train()
    tokens, mask, labels = prompt_batch()
    output = model(images(), tokens, mask)
    assert output.logits.shape == (len(LABELS), 2)
    assert output.image_features is not None and output.image_features.shape == (len(LABELS), 64)
    losses = model.compute_loss(output, labels)
    assert torch.isfinite(losses["loss"])
    weights = model.config.losses
    assert ("cmc" in losses) == (weights.cmc > 0)
    assert ("kl" in losses) == (weights.kl > 0)
    if weights.cmc == 0 and weights.kl == 0:
        assert model.text is None and output.text_features is None
    else:
        assert output.text_features is not None and output.text_features.shape == (len(LABELS), 64)
    losses["loss"].backward()
    # No parameter is left out of the graph (data-parallel training needs every one of them).
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


@pytest.mark.parametrize(
    "overrides",
    [{}, {**CVIT, "spa.mode": "matrix", "text.pooling": "concat_last"}],
    ids=["default", "cvit_matrix_concat"],
)
def test_one_optimiser_step_lowers_the_loss_on_a_fixed_batch(overrides: dict) -> None:
    # With a detached ℓkl target (the default) the text tower follows ℓcmc only, so the total is not one
    # objective of all parameters; the check uses the non-detached form, where it is.
    torch.manual_seed(0)
    model = create_model("mfclip-tiny", **overrides, **{"losses.kl_detach_text": False})
    model.train()
    tokens, mask, labels = prompt_batch()
    batch = images()
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-3)
    before = model.compute_loss(model(batch, tokens, mask), labels)["loss"]
    before.backward()
    optimiser.step()
    with torch.no_grad():
        after = model.compute_loss(model(batch, tokens, mask), labels)["loss"]
    assert after < before


def test_inference_path_never_runs_the_text_tower() -> None:
    model = create_model("mfclip-tiny").eval()
    assert model.text is not None
    calls: list[str] = []
    model.text.tower.register_forward_pre_hook(lambda *_: calls.append("tower"))
    model.text.tower.transformer.register_forward_pre_hook(lambda *_: calls.append("transformer"))
    model.text.register_forward_pre_hook(lambda *_: calls.append("fle"))
    batch = images(3)
    proba = model.predict_proba(batch)
    module = model.inference_module()
    exported = module(batch)
    model(batch)  # forward without prompts
    assert calls == []
    assert proba.shape == (3,) and torch.all((proba >= 0) & (proba <= 1))
    torch.testing.assert_close(proba, exported.detach())
    text_params = {id(p) for p in model.text.parameters()}
    assert not any(id(p) in text_params for p in module.parameters())
    # The training forward does run it.
    tokens, mask, _ = prompt_batch(LABELS[:3])
    model(batch, tokens, mask)
    assert "transformer" in calls


def test_predict_proba_matches_forward_logits() -> None:
    model = create_model("mfclip-tiny").eval()
    batch = images(4)
    with torch.no_grad():
        expected = model(batch).p_fake
    torch.testing.assert_close(model.predict_proba(batch), expected)


def test_no_batch_size_cap_by_default_but_release_quirk_caps_it() -> None:
    model = create_model("mfclip-tiny", **CVIT).eval()
    with torch.no_grad():
        assert model(images(30)).logits.shape == (30, 2)
    capped = create_model(
        "mfclip-tiny",
        **{**CVIT, "vision.cvit.batch_position_embedding": True, "vision.cvit.max_batch": 4},
    ).eval()
    with torch.no_grad():
        capped(images(4))
        with pytest.raises(ValueError, match=r"vision\.cvit\.max_batch.*batch of 5"):
            capped(images(5))


def test_release_input_feeds_transposed_byte_pixels_to_the_image_branch() -> None:
    model = create_model("mfclip-tiny", **{"vision.release_input": True})
    batch = images(2)
    torch.testing.assert_close(model.vision.global_input(batch), batch.transpose(-1, -2) * 255)
    normal = create_model("mfclip-tiny")
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    torch.testing.assert_close(normal.vision.global_input(batch), (batch - mean) / std)
    unnormalised = create_model("mfclip-tiny", **{"vision.normalize": "none"})
    assert torch.equal(unnormalised.vision.global_input(batch), batch)


def test_noise_branch_input_size_follows_image_size_and_grid() -> None:
    model = create_model("mfclip-tiny", **{"vision.noise.grid": 4})
    assert model.vision.noise is not None and model.vision.noise.input_size == 16
    # 16 px patch → two pooled blocks → 4×4 map of 16 channels.
    assert model.vision.noise.to_token.in_features == 16 * 4 * 4
    whole = create_model("mfclip-tiny", **{"vision.noise.patch_mode": "whole"})
    assert whole.vision.noise is not None and whole.vision.noise.input_size == 64
    with torch.no_grad():
        out = model.eval()(images(2))
    assert int(out.extras["patch_index"].max()) < 16


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (torch.rand(2, 4, 64, 64), "3 channels"),
        (torch.rand(2, 1, 64, 64), "3 channels"),
        (torch.rand(2, 3, 32, 32), "64×64"),
        (torch.rand(2, 3, 64, 48), "64×64"),
        (torch.rand(3, 64, 64), "shape"),
        (torch.zeros(2, 3, 64, 64, dtype=torch.uint8), "floating point"),
    ],
)
def test_bad_images_raise_value_errors_naming_the_problem(bad: torch.Tensor, message: str) -> None:
    model = create_model("mfclip-tiny").eval()
    with pytest.raises(ValueError, match=message):
        model(bad)
    with pytest.raises(ValueError, match=message):
        model.predict_proba(bad)


def test_sizes_the_grid_or_backbone_cannot_split_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"cannot be split into a 3×3 grid"):
        create_model("mfclip-tiny", **{"vision.noise.grid": 3})
    with pytest.raises(ConfigError, match=r"patch_size"):
        create_model("mfclip-tiny", image_size=60)
    with pytest.raises(ConfigError, match=r"downsampling of vision\.cvit"):
        create_model("mfclip-tiny", image_size=48, **CVIT)
    with pytest.raises(ConfigError, match=r"noise patch size"):
        create_model("mfclip-tiny", **{"vision.noise.grid": 32})  # 2 px patches, two pooled blocks
    with pytest.raises(ConfigError, match="at least one of image_branch and noise_branch"):
        create_model("mfclip-tiny", vision={"image_branch": False, "noise_branch": False})


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("ViT-B-16-SigLIP", "uses a timm image tower, which clip_vit does not support"),
        ("EVA02-B-16", "uses a timm image tower, which clip_vit does not support"),
        ("RN50", "has a ResNet image tower, which clip_vit does not support"),
    ],
)
def test_non_native_open_clip_image_towers_are_refused(arch: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        create_model("mfclip-tiny", **{"vision.clip_vit.arch": arch})
    assert str(err.value) == (
        f"vision.clip_vit.arch: {arch!r} {message}; use a native open_clip ViT config such as ViT-B-16"
    )


def test_bad_prompts_raise_value_errors() -> None:
    model = create_model("mfclip-tiny")
    tokens, mask, _ = prompt_batch()
    with pytest.raises(ValueError, match=r"prompt_tokens must have shape \(B, 4, 77\)"):
        model(images(), tokens[:, 0])
    with pytest.raises(ValueError, match="rows"):
        model(images(2), tokens, mask)
    with pytest.raises(ValueError, match="prompt_mask"):
        model(images(), tokens, mask[:, :2])
    out_of_vocabulary = tokens.clone()
    out_of_vocabulary[1, 2, 3] = 49408
    with pytest.raises(ValueError, match=r"token id 49408, outside the CLIP vocabulary 0\.\.49407"):
        model(images(), out_of_vocabulary, mask)
    with pytest.raises(ValueError, match="token id -1"):
        model(images(), tokens - 1, mask)
    no_end = tokens.clone()
    no_end[2, 1] = 0
    with pytest.raises(ValueError, match=r"prompt_tokens\[2, 1\] has no end-of-text token"):
        model(images(), no_end, mask)


def test_training_without_prompts_is_an_error_but_evaluation_scores_ce_only() -> None:
    model = create_model("mfclip-tiny")
    _, _, labels = prompt_batch()
    output = model.train()(images())
    with pytest.raises(ValueError, match="needs prompt_tokens"):
        model.compute_loss(output, labels)
    with torch.no_grad():
        losses = model.eval().compute_loss(model(images()), labels)
    assert set(losses) == {"ce", "loss"}


def test_model_output_and_interface() -> None:
    model = create_model("mfclip-tiny")
    assert isinstance(model, MFCLIP) and model.image_size == 64 and model.uses_text()
    tokens, mask, _ = prompt_batch()
    output = model(images(), tokens, mask)
    assert isinstance(output, ModelOutput)
    assert output.text_prediction is not None and output.text_prediction.shape == (len(LABELS), 64)
    torch.testing.assert_close(model.encode_text(tokens, mask), output.text_features)
    no_text = create_model("mfclip-tiny", losses={"cmc": 0, "kl": 0})
    assert not no_text.uses_text() and no_text.clip_towers()["text"] is None


@pytest.mark.parametrize("overrides", [{}, CVIT, RELEASE_QUIRKS], ids=["clip_vit", "cvit", "release"])
def test_grad_cam_targets_the_image_branch(overrides: dict) -> None:
    grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = create_model("mfclip-tiny", **overrides).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x).logits

    cam = grad_cam.GradCAM(
        model=Logits(),
        target_layers=model.explain_target_layers(),
        reshape_transform=model.explain_reshape_transform(),
    )
    heatmap = cam(input_tensor=images(2), targets=[ClassifierOutputTarget(1)] * 2)
    assert heatmap.shape == (2, 64, 64)
    noise_only = create_model("mfclip-tiny", **{"vision.image_branch": False})
    with pytest.raises(NotImplementedError, match="image branch"):
        noise_only.explain_target_layers()


# --- parameter groups and weight decay ---------------------------------------------------------------


def clip_state_of(model: MFCLIP, towers: tuple[str, ...] = ("visual", "text")) -> dict[str, torch.Tensor]:
    """The model's CLIP towers as an open_clip state dict (what a pretrained CLIP file holds)."""
    state: dict[str, torch.Tensor] = {}
    if "visual" in towers:
        state.update({f"visual.{k}": v for k, v in model.clip_towers()["visual"].state_dict().items()})
    if "text" in towers:
        state.update(model.clip_towers()["text"].state_dict())
    return state


def group_ids(model: MFCLIP) -> dict[str, set[int]]:
    return {name: {id(p) for p in params} for name, params in model.parameter_groups().items()}


def tower_ids(model: MFCLIP, name: str) -> set[int]:
    return {id(p) for p in model.clip_towers()[name].parameters()}


def test_randomly_initialised_towers_are_new_parameters() -> None:
    model = create_model("mfclip-tiny")
    assert model.pretrained_towers == set()
    groups = group_ids(model)
    assert groups["pretrained"] == set()
    assert groups["new"] == {id(p) for p in model.parameters() if p.requires_grad}


def test_only_the_towers_that_received_weights_are_pretrained(tmp_path) -> None:
    from mfclip.models.weights import load_clip_weights_into

    torch.manual_seed(0)
    source = create_model("mfclip-tiny")
    image_only = create_model("mfclip-tiny")
    load_clip_weights_into(image_only, clip_state_of(source, ("visual",)), strict=False)
    assert image_only.pretrained_towers == {"visual"}
    groups = group_ids(image_only)
    assert groups["pretrained"] == tower_ids(image_only, "visual")
    assert tower_ids(image_only, "text") <= groups["new"]

    path = tmp_path / "clip.pt"
    torch.save(clip_state_of(source), path)
    both = create_model("mfclip-tiny", clip_weights=str(path))
    assert both.pretrained_towers == {"visual", "text"}
    assert group_ids(both)["pretrained"] == tower_ids(both, "visual") | tower_ids(both, "text")
    with pytest.raises(ValueError, match="no CLIP tower 'vision'"):
        both.mark_pretrained(["vision"])


def test_a_trained_checkpoint_counts_as_loaded(tmp_path) -> None:
    from mfclip.models.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(create_model("mfclip-tiny"), tmp_path / "ckpt", {})
    model, _ = load_checkpoint(tmp_path / "ckpt")
    assert model.pretrained_towers == {"visual", "text"}
    assert group_ids(model)["pretrained"] == tower_ids(model, "visual") | tower_ids(model, "text")


def test_no_weight_decay_follows_open_clip() -> None:
    model = create_model("mfclip-tiny", **{"spa.mode": "matrix"})
    exempt = model.no_weight_decay()
    params = dict(model.named_parameters())
    assert "logit_scale" in exempt and params["logit_scale"].ndim == 0
    for name, param in params.items():
        is_norm = ".ln_" in name or "norm" in name or name.startswith("head.0.")
        expected = param.ndim < 2 or is_norm or name.endswith(".bias")
        assert (name in exempt) == expected, name
    # The large matrices decay: projections, convolutions, embeddings of tokens and positions, SPA's W.
    for name in ("vision.clip_vit.conv1.weight", "text.tower.token_embedding.weight", "spa.gate_logits"):
        assert name not in exempt
    assert "vision.clip_vit.class_embedding" in exempt and "vision.noise.features.0.0.bias" in exempt
    batch_norm = "vision.noise.features.0.1.weight"
    assert isinstance(model.get_submodule("vision.noise.features.0.1"), torch.nn.BatchNorm2d)
    assert batch_norm in exempt


# --- dtypes: float32 pixels whatever the model's dtype ----------------------------------------------


def photo_crops(astronaut_rgb, size: int = 64, count: int = 16) -> torch.Tensor:
    """Crops of a real photo (8-bit steps), where neighbouring patches often score close together."""
    photo = torch.from_numpy(astronaut_rgb).permute(2, 0, 1).float() / 255
    generator = torch.Generator().manual_seed(0)
    tops = torch.randint(0, photo.shape[1] - size, (count,), generator=generator).tolist()
    lefts = torch.randint(0, photo.shape[2] - size, (count,), generator=generator).tolist()
    return torch.stack([photo[:, y : y + size, x : x + size] for y, x in zip(tops, lefts, strict=True)])


@pytest.mark.parametrize(
    "overrides", [{}, CVIT, {"vision.fusion": "concat"}], ids=["clip_vit", "cvit", "concat"]
)
def test_a_bfloat16_model_takes_float32_pixels_and_picks_the_float32_patches(
    overrides: dict, astronaut_rgb
) -> None:
    pixels = photo_crops(astronaut_rgb)
    torch.manual_seed(0)
    model = create_model("mfclip-tiny", **overrides).eval()
    with torch.no_grad():
        reference = model(pixels)
        reference_residual, _ = model.vision.noise_input(pixels)
        half = model.to(torch.bfloat16)
        output = half(pixels)
        residual, _ = half.vision.noise_input(pixels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = create_model("mfclip-tiny", **overrides).eval()(pixels)
    assert output.logits.dtype == torch.bfloat16
    assert torch.equal(output.extras["patch_index"], reference.extras["patch_index"])
    assert torch.equal(mixed.extras["patch_index"], reference.extras["patch_index"])
    assert residual.dtype == torch.float32 and torch.equal(residual, reference_residual)
    assert len(set(reference.extras["patch_index"].tolist())) > 1
    torch.testing.assert_close(output.p_fake, reference.p_fake, rtol=0.0, atol=0.02)


def test_half_precision_pixels_are_widened_before_the_operators(astronaut_rgb) -> None:
    pixels = photo_crops(astronaut_rgb, count=4)
    model = create_model("mfclip-tiny").eval()
    with torch.no_grad():
        residual, index = model.vision.noise_input(pixels.to(torch.bfloat16))
    assert residual.dtype == torch.float32 and index.dtype == torch.int64
