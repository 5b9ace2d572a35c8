"""The CLIP-based peers (UnivFD, Effort, GenD, RINE): presets, the property that defines each method, and
that each one trains, round-trips through checkpoints, exports and explains like every detector."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mfclip.models import registry
from mfclip.models.baselines import ClipBaseline
from mfclip.models.checkpoint import load_checkpoint, save_checkpoint
from mfclip.models.clip_tower import embed_tokens, pooled_cls, run_block
from mfclip.models.peers import RINE, Effort, GenD
from mfclip.models.peers.effort import SVDResidual
from mfclip.models.peers.losses import alignment_loss, supervised_contrastive, uniformity_loss
from mfclip.utils.config import ConfigError

# preset: (type, image size, parameter range, trainable-parameter range)
PEERS = {
    "univfd-l14": ("clip_probe", 224, (303e6, 305e6), (768 + 1, 768 + 1)),
    "univfd-b16": ("clip_probe", 224, (85e6, 87e6), (512 + 1, 512 + 1)),
    "univfd-tiny": ("clip_probe", 64, (1e5, 2e5), (65, 65)),
    # Effort on ViT-L/14: 24 blocks × 4 matrices × (1024 + 1 + 1024) residual factors + the head ≈ 0.19 M.
    "effort-l14": ("effort", 224, (303e6, 305e6), (24 * 4 * 2049 + 2050, 24 * 4 * 2049 + 2050)),
    "effort-b16": ("effort", 224, (85e6, 87e6), (12 * 4 * 1537 + 1538, 12 * 4 * 1537 + 1538)),
    "effort-tiny": ("effort", 64, (1e5, 2e5), (2 * 4 * 129 + 130, 2 * 4 * 129 + 130)),
    # GenD: 2 LayerNorms per block + ln_pre + ln_post, weight and bias each, + the head.
    "gend-l14": ("gend", 224, (303e6, 305e6), ((2 * 24 + 2) * 2048 + 2050, (2 * 24 + 2) * 2048 + 2050)),
    "gend-b16": ("gend", 224, (85e6, 87e6), ((2 * 12 + 2) * 1536 + 1538, (2 * 12 + 2) * 1536 + 1538)),
    "gend-tiny": ("gend", 64, (1e5, 2e5), ((2 * 2 + 2) * 128 + 130, (2 * 2 + 2) * 128 + 130)),
    "rine-l14": ("rine", 224, (309e6, 312e6), (6e6, 7e6)),
    "rine-b16": ("rine", 224, (91e6, 93e6), (5e6, 7e6)),
    "rine-tiny": ("rine", 64, (1e5, 2e5), (2e4, 3e4)),
}
TINY = ["univfd-tiny", "effort-tiny", "gend-tiny", "rine-tiny"]


def _images(batch: int = 8, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A separable toy batch: every second image carries a faint 4-pixel checkerboard."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(batch) % 2
    base = torch.rand(batch, 3, 1, 1, generator=generator) * 0.5 + 0.2
    noise = torch.rand(batch, 3, size, size, generator=generator) * 0.1
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    checker = ((yy // 4 + xx // 4) % 2).float() * 0.2 - 0.1
    return (base + noise + labels.view(-1, 1, 1, 1) * checker).clamp(0, 1), labels


def _small(name: str, seed: int = 0, **overrides):
    """A tiny preset at 32 px (4 × 4 patches), the size every test here uses."""
    torch.manual_seed(seed)
    return registry.create_model(name, image_size=32, **overrides)


def _train(model, steps: int = 4, lr: float = 1e-2) -> list[float]:
    images, labels = _images()
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    history = []
    for _ in range(steps):
        loss = model.compute_loss(model(images), labels)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    return history


def _trainable(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PEERS))
def test_peer_presets_are_registered_models(name: str) -> None:
    model_type, size, (low, high), (trainable_low, trainable_high) = PEERS[name]
    assert name in registry.list_models() and model_type in registry.list_model_types()
    info = registry.model_summary(name)
    assert info["type"] == model_type and info["image_size"] == size
    assert low < info["params"] < high and info["inference_params"] == info["params"]
    assert "(" in info["description"] and "20" in info["description"]  # cites the paper and its year
    with torch.device("meta"):
        model = registry.create_model(name)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable_low <= trainable <= trainable_high


@pytest.mark.parametrize(
    ("suffix", "width", "layers", "patch", "embed"), [("l14", 1024, 24, 14, 768), ("b16", 768, 12, 16, 512)]
)
def test_presets_use_the_papers_and_mfclips_backbones(
    suffix: str, width: int, layers: int, patch: int, embed: int
) -> None:
    for method in ("univfd", "effort", "gend", "rine"):
        config = registry.get_model_config(f"{method}-{suffix}")
        tower = config.clip_vit.resolved()
        assert (tower["width"], tower["layers"], tower["patch_size"]) == (width, layers, patch)
        assert tower["quick_gelu"] is True and config.embed_dim == embed and config.image_size == 224


# ---------------------------------------------------------------------------------------------------
# UnivFD
# ---------------------------------------------------------------------------------------------------


def test_univfd_is_a_frozen_probe_with_one_fake_logit() -> None:
    model = _small("univfd-tiny")
    assert isinstance(model, ClipBaseline) and model.config.type == "clip_probe"
    assert not model.config.normalize_features and model.config.binary_logit
    assert _trainable(model) == {"head.linear.weight", "head.linear.bias"}
    assert (
        float(model.head.bias.detach().abs().max()) == 0
        and 0.01 < float(model.head.weight.detach().std()) < 0.04
    )
    images, labels = _images()
    output = model.eval()(images)
    fake_logit = model.head.linear(model.features(images))[:, 0]
    assert torch.equal(output.logits[:, 0], torch.zeros(8))
    torch.testing.assert_close(output.p_fake, torch.sigmoid(fake_logit))
    torch.testing.assert_close(
        model.compute_loss(output, labels)["loss"],
        F.binary_cross_entropy_with_logits(fake_logit, labels.float()),
    )
    tower = _snapshot(model.visual)
    _train(model)
    assert all(torch.equal(v, model.visual.state_dict()[k]) for k, v in tower.items())


# ---------------------------------------------------------------------------------------------------
# Effort
# ---------------------------------------------------------------------------------------------------


def test_effort_trains_only_the_residual_factors_and_the_head() -> None:
    model = _small("effort-tiny")
    expected = {
        f"residuals.{block}.{matrix}.{factor}"
        for block, matrix, factor in itertools.product((0, 1), ("q", "k", "v", "out"), ("u", "s", "v"))
    }
    assert _trainable(model) == expected | {"head.weight", "head.bias"}
    assert model.parameter_groups()["pretrained"] == []  # the factors are new, trained at the main rate


def test_effort_split_reconstructs_the_original_weights_exactly_at_initialisation() -> None:
    model = _small("effort-tiny").eval()
    tower = dict(model.visual.transformer.named_parameters())
    effective = model.attention_weights()
    assert set(effective) == {
        f"resblocks.{b}.attn.{w}" for b in (0, 1) for w in ("in_proj_weight", "out_proj.weight")
    }
    for key, weight in effective.items():
        assert torch.equal(weight, tower[key]), key  # bit for bit, not just close
    for residual, weight in model.split_matrices():
        singular = torch.linalg.svdvals(weight.double())
        assert torch.allclose(
            residual.s0.double(), singular[-1:], atol=1e-5 * float(singular[0])
        )  # the smallest
        principal = residual.principal(weight)
        rebuilt = principal + residual.s0 * residual.u0 @ residual.v0.t()
        torch.testing.assert_close(rebuilt, weight, atol=1e-6, rtol=1e-5)
        principal_singular = torch.linalg.svdvals(principal.double())
        assert principal_singular[-1] < 1e-5 * principal_singular[0]  # rank r = width − 1
    # The features are the plain tower's CLS feature: nothing changes until training moves the residual.
    images, _ = _images()
    tokens = model.visual.transformer(embed_tokens(model.visual, model.normalize(images)))
    torch.testing.assert_close(model.features(images), pooled_cls(model.visual, tokens), atol=1e-5, rtol=1e-5)


def test_effort_frozen_principal_subspace_does_not_move() -> None:
    model = _small("effort-tiny")
    tower = _snapshot(model.visual)
    frozen = {
        k: v.clone()
        for k, v in model.residuals.state_dict().items()
        if k.rsplit(".", 1)[-1] in ("u0", "s0", "v0")
    }
    principal_before = [
        residual.principal(weight).detach().clone() for residual, weight in model.split_matrices()
    ]
    _train(model, steps=3)
    assert all(torch.equal(v, model.visual.state_dict()[k]) for k, v in tower.items())
    state = model.residuals.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in frozen.items())
    moved = False
    for (residual, weight), before in zip(model.split_matrices(), principal_before, strict=True):
        assert torch.equal(residual.principal(weight), before)
        # What the model runs is the frozen principal part plus the trained residual.
        trained = residual.s * residual.u @ residual.v.t()
        torch.testing.assert_close(weight + residual.delta(), before + trained, atol=1e-6, rtol=1e-5)
        moved |= not torch.equal(residual.u, residual.u0)
    assert moved


def test_effort_constraints_match_their_definitions() -> None:
    model = _small("effort-tiny")
    with torch.no_grad():
        for residual, _ in model.split_matrices():
            for factor in (residual.u, residual.s, residual.v):
                factor.add_(0.05 * torch.randn_like(factor))
    for residual, weight in model.split_matrices():
        w = weight.double()
        u_full, _, vh_full = torch.linalg.svd(w)
        expected = 0.0
        for basis, trained in (
            (u_full[:, :-1], residual.u.double()),
            (vh_full[:-1].t(), residual.v.double()),
        ):
            stacked = torch.cat([basis, trained], dim=1)
            eye = torch.eye(stacked.shape[1], dtype=torch.float64)
            principal_block = (
                (basis.t() @ basis - torch.eye(basis.shape[1], dtype=torch.float64)).square().sum()
            )
            expected += float((stacked.t() @ stacked - eye).square().sum() - principal_block)
        assert float(residual.orthogonality_loss()) == pytest.approx(expected, rel=1e-3, abs=1e-6)
        effective = w + residual.delta().double()
        expected_sv = abs(float(effective.square().sum() - w.square().sum()))
        assert float(residual.singular_value_loss(weight)) == pytest.approx(expected_sv, rel=1e-3, abs=1e-6)
    images, labels = _images()
    losses = model.compute_loss(model(images), labels)
    assert set(losses) == {"loss", "ce", "orthogonal", "singular_value"}
    assert float(losses["orthogonal"]) > 0 and float(losses["singular_value"]) > 0
    total = losses["ce"] + losses["orthogonal"] + losses["singular_value"]  # both weights are 1
    torch.testing.assert_close(losses["loss"].detach(), total)


def test_pretrained_clip_weights_are_split_afresh(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = _small("univfd-tiny", seed=7).visual
    path = tmp_path / "open_clip_model.safetensors"
    save_file({f"visual.{k}": v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = _small("effort-tiny", seed=1, clip_weights=str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(model.visual.state_dict()[key], value), key
    effective = model.attention_weights()
    tower = dict(model.visual.transformer.named_parameters())
    assert all(torch.equal(effective[k], tower[k]) for k in effective)
    for (
        residual,
        weight,
    ) in model.split_matrices():  # the residual is the loaded weight's, not the random one's
        singular = torch.linalg.svdvals(weight.double())
        assert torch.allclose(residual.s0.double(), singular[-1:], atol=1e-5 * float(singular[0]))


def test_effort_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"residual_rank: 64 must be smaller than the tower width 64"):
        registry.create_model("effort-tiny", residual_rank=64)
    with pytest.raises(ConfigError, match="targets"):
        registry.create_model("effort-tiny", targets=[])
    with pytest.raises(ConfigError, match="targets"):
        registry.create_model("effort-tiny", targets=["q", "q"])
    with pytest.raises(ValueError, match="square"):
        SVDResidual(4, 3, 1)
    model = _small("effort-tiny", targets=["v"])
    assert set(model.attention_weights()) == {
        "resblocks.0.attn.in_proj_weight",
        "resblocks.1.attn.in_proj_weight",
    }


# ---------------------------------------------------------------------------------------------------
# GenD
# ---------------------------------------------------------------------------------------------------


def test_gend_changes_nothing_but_the_norms_and_the_head() -> None:
    model = _small("gend-tiny")
    norms = {
        f"visual.{name}.{p}"
        for name, module in model.visual.named_modules()
        if isinstance(module, torch.nn.LayerNorm)
        for p in ("weight", "bias")
    }
    assert len(norms) == 2 * (2 * 2 + 2)  # ln_pre, ln_1 and ln_2 of both blocks, ln_post
    assert _trainable(model) == norms | {"head.weight", "head.bias"}
    before = _snapshot(model)
    _train(model, steps=3)
    after = model.state_dict()
    for key, value in before.items():
        changed = not torch.equal(value, after[key])
        assert changed == (key in norms or key.startswith("head.")), key


def test_gend_features_lie_on_the_sphere_and_its_losses_match_their_definitions() -> None:
    model = _small("gend-tiny").eval()
    images, labels = _images()
    output = model(images)
    features = output.image_features
    torch.testing.assert_close(features.norm(dim=1), torch.ones(8))
    pairs = list(itertools.combinations(range(8), 2))
    distances = {(i, j): float((features[i] - features[j]).double().norm()) for i, j in pairs}
    uniformity = np.log(np.mean([np.exp(-2.0 * d**2) for d in distances.values()]))
    alignment = np.mean([d**2 for (i, j), d in distances.items() if labels[i] == labels[j]])
    losses = model.compute_loss(output, labels)
    assert float(losses["uniformity"]) == pytest.approx(uniformity, rel=1e-4)
    assert float(losses["alignment"]) == pytest.approx(alignment, rel=1e-4)
    assert float(losses["loss"]) == pytest.approx(
        float(losses["ce"]) + 0.5 * uniformity + 0.1 * alignment, rel=1e-4
    )
    assert (
        float(alignment_loss(features[:1], labels[:1])) == 0.0 and float(uniformity_loss(features[:1])) == 0.0
    )


# ---------------------------------------------------------------------------------------------------
# RINE
# ---------------------------------------------------------------------------------------------------


def test_rine_block_importances_are_a_softmax_over_blocks() -> None:
    model = _small("rine-tiny")
    weights = model.block_importances()
    assert weights.shape == (2, 64)  # (blocks, proj_dim)
    torch.testing.assert_close(weights.sum(dim=0), torch.ones(64))  # each feature's weights over blocks
    raw = model.importance.detach()
    torch.testing.assert_close(weights, raw.exp() / raw.exp().sum(dim=0, keepdim=True))
    with torch.no_grad():
        model.importance[0, 3] += 1.0  # raising one block's score for one feature moves only that column
    changed = (model.block_importances() - weights).abs() > 1e-7
    assert changed[:, 3].all() and not changed[:, :3].any() and not changed[:, 4:].any()


def test_rine_reads_the_class_token_of_every_block() -> None:
    model = _small("rine-tiny").eval()
    images, _ = _images()
    captured = []
    hooks = [
        block.ln_2.register_forward_hook(lambda m, i, o: captured.append(o[:, 0]))
        for block in model.visual.transformer.resblocks
    ]
    tokens = model.block_tokens(images)
    for hook in hooks:
        hook.remove()
    assert tokens.shape == (8, 2, 64)
    torch.testing.assert_close(tokens, torch.stack(captured, dim=1))  # the normalised MLP input (ln_2)
    outputs = _small("rine-tiny", tap="block_output").eval()
    reference = outputs.visual.forward_intermediates(
        outputs.normalize(images), output_fmt="NLC", output_extra_tokens=True, intermediates_only=True
    )["image_intermediates_prefix"]
    torch.testing.assert_close(outputs.block_tokens(images), torch.cat(reference, dim=1))
    # The step-wise tower forward is open_clip's own, also with the attention weights passed explicitly.
    block = model.visual.transformer.resblocks[0]
    x = embed_tokens(model.visual, model.normalize(images))
    explicit = run_block(block, x, block.attn.in_proj_weight, block.attn.out_proj.weight)
    for mine, theirs in zip(explicit, run_block(block, x), strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=1e-5)
    x = embed_tokens(model.visual, model.normalize(images))
    y = x
    for block in model.visual.transformer.resblocks:
        y, _ = run_block(block, y)
    torch.testing.assert_close(
        pooled_cls(model.visual, y) @ model.visual.proj, model.visual(model.normalize(images))
    )


def test_rine_forward_is_the_importance_weighted_sum_and_trains_all_but_the_tower() -> None:
    model = _small("rine-tiny").eval()
    images, _ = _images()
    tokens = model.block_tokens(images)
    fused = (model.block_importances() * model.project_blocks(tokens)).sum(dim=1)
    z = model.project_fused(fused)
    output = model(images)
    torch.testing.assert_close(output.image_features, z)
    torch.testing.assert_close(output.p_fake, torch.sigmoid(model.head(z)[:, 1]))
    assert _trainable(model) == {n for n, _ in model.named_parameters() if not n.startswith("visual.")}
    tower = _snapshot(model.visual)
    _train(model, steps=3)
    assert not model.visual.training  # a fixed feature extractor, whatever the mode
    assert all(torch.equal(v, model.visual.state_dict()[k]) for k, v in tower.items())


def test_rine_loss_is_the_summed_bce_plus_the_weighted_contrastive_term() -> None:
    """The authors' objective: BCE summed over the batch + ξ · SupCon(z/‖z‖, τ); ξ was chosen with it."""
    model = _small("rine-tiny").eval()
    images, labels = _images()
    output = model(images)
    z = output.image_features
    fake_logit = model.head(z)[:, 1]
    bce = F.binary_cross_entropy_with_logits(fake_logit, labels.float(), reduction="sum")
    contrastive = supervised_contrastive(F.normalize(z, dim=-1), labels, 0.07)
    losses = model.compute_loss(output, labels)
    assert model.config.ce_reduction == "sum" and model.config.contrastive_weight == 0.2
    torch.testing.assert_close(losses["ce"], bce)
    torch.testing.assert_close(losses["loss"], bce + 0.2 * contrastive)
    for name in ("rine-l14", "rine-b16"):
        assert registry.get_model_config(name).ce_reduction == "sum"
    averaged = _small("rine-tiny", ce_reduction="mean")
    averaged.load_state_dict(model.state_dict())
    torch.testing.assert_close(averaged.eval().compute_loss(averaged(images), labels)["ce"], bce / 8)


def test_supervised_contrastive_loss_matches_its_definition() -> None:
    generator = torch.Generator().manual_seed(3)
    features = F.normalize(torch.randn(6, 5, generator=generator), dim=1)
    labels = torch.tensor([0, 1, 0, 1, 1, 2])  # the last anchor has no positive
    tau = 0.07
    total = 0.0
    for i in range(6):
        positives = [p for p in range(6) if p != i and labels[p] == labels[i]]
        denominator = sum(np.exp(float(features[i] @ features[a]) / tau) for a in range(6) if a != i)
        if positives:
            total += -np.mean(
                [np.log(np.exp(float(features[i] @ features[p]) / tau) / denominator) for p in positives]
            )
    assert float(supervised_contrastive(features, labels, tau)) == pytest.approx(total / 6, rel=1e-4)


# ---------------------------------------------------------------------------------------------------
# Every peer in the harness
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TINY)
def test_peer_learns_a_separable_toy_batch(name: str) -> None:
    model = _small(name)
    images, labels = _images()
    before = model.eval().compute_loss(model(images), labels)["ce"]
    _train(model, steps=24)
    after = model.eval().compute_loss(model(images), labels)["ce"]
    assert float(after) < float(before) - 0.05


@pytest.mark.parametrize("name", TINY)
def test_peer_round_trips_through_a_checkpoint(name: str, tmp_path: Path) -> None:
    model = _small(name)
    _train(model, steps=2)
    images, _ = _images()
    expected = model.eval().predict_proba(images)
    save_checkpoint(model, tmp_path / "ckpt", metadata={"synthetic": True})
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    assert type(loaded) is type(model) and loaded.config == model.config
    torch.testing.assert_close(loaded.predict_proba(images), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", TINY)
def test_peer_exports_to_torchscript_and_onnx(name: str, tmp_path: Path) -> None:
    from mfclip.inference.export import export_model, load_exported

    model = _small(name)
    _train(model, steps=2)
    model.eval()
    images, _ = _images()
    for fmt, suffix in (("torchscript", ".pt"), ("onnx", ".onnx")):
        result = export_model(model, tmp_path / f"model{suffix}", fmt)
        got = load_exported(result.path)(images.numpy())
        np.testing.assert_allclose(got, model.predict_proba(images).numpy(), atol=1e-4, rtol=0)


def _photo_crops(astronaut_rgb: np.ndarray, size: int = 32) -> torch.Tensor:
    """Four 32 px crops of a real photo (a near-uniform toy image gives Grad-CAM nothing to show)."""
    image = torch.from_numpy(astronaut_rgb).permute(2, 0, 1).float() / 255
    crops = [image[:, i * 100 : i * 100 + 200, 100:300] for i in range(4)]
    return torch.stack([F.interpolate(c[None], size=size, mode="bilinear")[0] for c in crops])


@pytest.mark.parametrize("name", TINY)
def test_peer_explains_with_grad_cam(name: str, astronaut_rgb: np.ndarray) -> None:
    from mfclip.inference.explain import grad_cam

    model = _small(name)
    _train(model, steps=2)
    maps = grad_cam(model.eval(), _photo_crops(astronaut_rgb))
    assert maps.shape == (4, 32, 32) and np.isfinite(maps).all()
    assert all(float(m.max()) == pytest.approx(1.0, abs=1e-5) and float(m.std()) > 0.05 for m in maps)


@pytest.mark.parametrize("name", TINY)
def test_peer_predicts_serves_and_explains_from_its_checkpoint(
    name: str, tmp_path: Path, astronaut_path: Path
) -> None:
    """A trained peer's checkpoint through the Python API, `mfclip predict`, the HTTP service and explain."""
    import csv

    from fastapi.testclient import TestClient

    from mfclip import Detector
    from mfclip.cli.errors import run_app
    from mfclip.cli.main import app
    from mfclip.inference.explain import explain
    from mfclip.serve import ServeSettings, create_app

    model = _small(name)
    _train(model, steps=2)
    directory = save_checkpoint(model.eval(), tmp_path / "ckpt", {"name": f"{name}-test", "synthetic": True})
    detector = Detector.from_pretrained(directory, device="cpu")
    prediction = detector.predict(astronaut_path)
    seen = detector.prepare(astronaut_path).tensor.unsqueeze(0)
    assert prediction.p_fake == pytest.approx(float(model.predict_proba(seen)[0]), abs=1e-6)

    out = tmp_path / "scores.csv"
    command = ["predict", "--checkpoint", str(directory), str(astronaut_path), "--out", str(out)]
    assert run_app(app, command) == 0
    with open(out, newline="", encoding="utf-8") as handle:
        (row,) = list(csv.DictReader(handle))
    assert float(row["p_fake"]) == pytest.approx(prediction.p_fake, abs=1e-6) and row["error"] == ""

    photo = [("file", ("astronaut.png", astronaut_path.read_bytes(), "image/png"))]
    with TestClient(create_app(detector, ServeSettings())) as client:
        card = client.get("/v1/model").json()
        assert card["preset"] == name and card["image_size"] == 32
        (result,) = client.post("/v1/detect", files=photo).json()["results"]
        assert result["status"] == 200 and result["p_fake"] == pytest.approx(prediction.p_fake, abs=1e-6)
        panel = client.post("/v1/explain", files=photo)
        assert panel.status_code == 200 and panel.headers["content-type"] == "image/png"
        assert float(panel.headers["x-p-fake"]) == pytest.approx(prediction.p_fake, abs=1e-4)
    explanation = explain(detector, astronaut_path)
    assert explanation.heatmap is not None and explanation.heatmap.shape == (32, 32)
    assert explanation.p_fake == pytest.approx(prediction.p_fake, abs=1e-6)


def test_peer_types_are_the_documented_classes() -> None:
    assert isinstance(_small("effort-tiny"), Effort)
    assert isinstance(_small("gend-tiny"), GenD)
    assert isinstance(_small("rine-tiny"), RINE)


# ---------------------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------------------

# experiment: (model preset, optimiser, lr for new and pretrained parameters, weight decay), the papers'
RECIPES = {
    "univfd": ("univfd-b16", "adamw", 1e-4, 0.0),
    "effort": ("effort-b16", "adam", 2e-4, 5e-4),
    "gend": ("gend-b16", "adamw", 3e-4, 0.0),
    "rine": ("rine-b16", "adam", 1e-3, 0.0),
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_peer_experiments_share_mfclips_budget_with_the_papers_optimiser(name: str) -> None:
    from mfclip.engine.compare import experiment_path
    from mfclip.engine.config import load_train_config

    reference = load_train_config(experiment_path("mfclip-full"))
    for experiment, suffix in ((name, "b16"), (f"{name}-large", "l14")):
        config = load_train_config(experiment_path(experiment))
        model, optimiser, lr, weight_decay = RECIPES[name]
        assert config.model.name == model.replace("b16", suffix) and config.model.overrides == {}
        assert (config.optim.name, config.optim.lr, config.optim.lr_pretrained) == (optimiser, lr, lr)
        assert config.optim.weight_decay == weight_decay
        for section in ("data", "trainer"):  # the budget: batch, epochs, schedule, precision, seed, augment
            assert getattr(config, section) == getattr(reference, section), (experiment, section)
        assert (config.optim.step_size_epochs, config.optim.gamma) == (15, 0.1)


def test_compare_runs_every_peer_in_one_command(tmp_path: Path) -> None:
    from mfclip.data.synth import generate_benchmark
    from mfclip.engine.compare import compare

    protocol = generate_benchmark(
        tmp_path / "synth", seed=1, size=60, image_size=32, workers=1, progress=False
    ).protocol_path
    fast = [
        "model.overrides.image_size=32",
        "trainer.max_epochs=1",
        "trainer.progress_bar=false",
        "trainer.log_every_n_steps=1",
        "logging.tensorboard=false",
        "data.num_workers=0",
        "data.batch_size=16",
    ]
    result = compare(
        TINY,
        protocol,
        base="tiny",
        out_dir=tmp_path / "cmp",
        overrides=fast,
        workers=0,
        plots=False,
        progress=False,
    )
    assert [run.label for run in result.runs] == TINY and {run.status for run in result.runs} == {"trained"}
    overall = result.table[(result.table["level"] == "frame") & (result.table["group_by"] == "")]
    assert overall[TINY].notna().all().all()
    markdown = result.markdown_path.read_text(encoding="utf-8")
    assert all(name in markdown for name in TINY)


@pytest.mark.parametrize("name", ["effort-tiny", "gend-tiny", "rine-tiny"])
def test_peer_losses_run_in_float32_under_autocast(name: str) -> None:
    model = _small(name).eval()
    images, labels = _images()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(images)
        mixed = model.compute_loss(output, labels)
    exact = model.compute_loss(output, labels)
    for key, value in mixed.items():
        assert value.dtype == torch.float32, key
        torch.testing.assert_close(value, exact[key], rtol=1e-6, atol=1e-7)
