"""SPA gates and the MFCLIP losses: order/size invariance, matrix limits, gathered = single-process."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mfclip.models.base import ModelOutput
from mfclip.models.config import SPAConfig
from mfclip.models.losses import clamped_logit_scale, contrastive_loss, kl_alignment_loss
from mfclip.models.registry import create_model
from mfclip.models.spa import SamplePairAttention


def unit(rows: int, dim: int = 16, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def trained_content_spa() -> SamplePairAttention:
    torch.manual_seed(0)
    spa = SamplePairAttention(SPAConfig(mode="content", hidden=8), embed_dim=16)
    with torch.no_grad():
        spa.out.weight.normal_()  # move away from the uniform initial gate
    return spa


def test_content_gates_start_at_init_gate() -> None:
    spa = SamplePairAttention(SPAConfig(mode="content", init_gate=0.3), embed_dim=16)
    gates = spa(unit(5), unit(5, seed=1), unit(5, seed=1))
    torch.testing.assert_close(gates, torch.full((5, 5), 0.3))


def test_content_gates_do_not_depend_on_batch_order_or_size() -> None:
    spa = trained_content_spa()
    images, texts = unit(7), unit(7, seed=1)
    with torch.no_grad():
        full = spa(images, texts, texts)
        order = torch.tensor([4, 0, 6, 2])
        subset = spa(images[order], texts[order], texts[order])
    assert full.std() > 0.01  # the gates really vary per pair
    torch.testing.assert_close(subset, full[order][:, order])


def test_matrix_gates_slice_and_fail_clearly_beyond_their_size() -> None:
    spa = SamplePairAttention(SPAConfig(mode="matrix", max_batch=6, init_gate=0.25), embed_dim=16)
    gates = spa(unit(4), unit(4, seed=1), unit(4, seed=1))
    torch.testing.assert_close(gates, torch.full((4, 4), 0.25))
    with torch.no_grad():
        spa.gate_logits.copy_(torch.arange(36.0).view(6, 6))
    torch.testing.assert_close(
        spa(unit(3), unit(3), unit(3)), torch.sigmoid(torch.arange(36.0).view(6, 6)[:3, :3])
    )
    with pytest.raises(ValueError, match=r"at most 6 \(spa\.max_batch\); got a batch of 7"):
        spa(unit(7), unit(7), unit(7))
    model = create_model("mfclip-tiny", spa={"mode": "matrix", "max_batch": 3})
    images = torch.rand(4, 3, 64, 64)
    tokens = torch.zeros(4, 4, 77, dtype=torch.long)
    tokens[..., 0], tokens[..., 1] = 49406, 49407
    output = model(images, tokens)
    with pytest.raises(ValueError, match=r"spa\.max_batch.*batch of 4"):
        model.compute_loss(output, torch.tensor([0, 1, 0, 1]))


def test_none_mode_is_plain_clip_infonce() -> None:
    images, texts = unit(5), unit(5, seed=1)
    scale = torch.tensor(10.0)
    logits = scale * images @ texts.T
    targets = torch.arange(5)
    expected = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
    spa = SamplePairAttention(SPAConfig(mode="none"), 16)
    torch.testing.assert_close(contrastive_loss(images, texts, scale, spa), expected)
    torch.testing.assert_close(contrastive_loss(images, texts, scale, None), expected)


def make_gather(full: dict[str, torch.Tensor], rank: int, batch: int, with_rank: bool):
    """Simulate all_gather: other ranks' blocks without gradient, the local block as given."""

    def gather(local: torch.Tensor) -> torch.Tensor:
        key = "image" if any(torch.equal(local.detach(), b) for b in full["image"].split(batch)) else "text"
        blocks = list(full[key].detach().split(batch))
        blocks[rank] = local
        return torch.cat(blocks)

    if with_rank:
        gather.rank = rank  # type: ignore[attr-defined]
    return gather


@pytest.mark.parametrize("mode", ["content", "matrix", "none"])
@pytest.mark.parametrize("world", [2, 3])
def test_gathered_contrastive_loss_equals_single_process(mode: str, world: int) -> None:
    batch = 4
    torch.manual_seed(0)
    spa = SamplePairAttention(SPAConfig(mode=mode, max_batch=24, hidden=8), embed_dim=16)
    if mode == "content":
        with torch.no_grad():
            spa.out.weight.normal_()
    elif mode == "matrix":
        with torch.no_grad():
            spa.gate_logits.normal_()
    images, texts = unit(batch * world), unit(batch * world, seed=1)
    scale = torch.tensor(14.0)
    single = contrastive_loss(images, texts, scale, spa)
    for with_rank in (True, False):
        per_rank = []
        for rank in range(world):
            local = slice(rank * batch, (rank + 1) * batch)
            gather = make_gather({"image": images, "text": texts}, rank, batch, with_rank)
            per_rank.append(contrastive_loss(images[local], texts[local], scale, spa, gather))
        torch.testing.assert_close(torch.stack(per_rank).mean(), single)


def test_model_compute_loss_with_gather_averages_to_the_single_process_loss() -> None:
    torch.manual_seed(0)
    model = create_model("mfclip-tiny").eval()
    images = torch.rand(6, 3, 64, 64)
    tokens = torch.randint(1, 1000, (6, 4, 77))
    tokens[..., 10] = 49407
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    with torch.no_grad():
        output = model(images, tokens)
        single = model.compute_loss(output, labels)
        totals = []
        for rank in range(2):
            local = slice(rank * 3, rank * 3 + 3)
            features = {
                "image": F.normalize(output.image_features, dim=-1),
                "text": F.normalize(output.text_features, dim=-1),
            }
            gather = make_gather(features, rank, 3, with_rank=True)
            part = ModelOutput(
                logits=output.logits[local],
                image_features=output.image_features[local],
                text_features=output.text_features[local],
                text_prediction=output.text_prediction[local],
            )
            totals.append(model.compute_loss(part, labels[local], gather))
    for key in ("loss", "ce", "cmc", "kl"):
        torch.testing.assert_close(torch.stack([t[key] for t in totals]).mean(), single[key])


def test_kl_is_text_to_prediction_and_detaches_the_text_target() -> None:
    text = torch.randn(3, 8, requires_grad=True)
    prediction = torch.randn(3, 8, requires_grad=True)
    p = F.softmax(text / 0.5, dim=-1)
    q = F.softmax(prediction / 0.5, dim=-1)
    expected = (p * (p.log() - q.log())).sum(-1).mean()
    loss = kl_alignment_loss(text, prediction, 0.5, detach_text=True)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert text.grad is None and prediction.grad is not None
    kl_alignment_loss(text, prediction, 0.5, detach_text=False).backward()
    assert text.grad is not None


def test_logit_scale_starts_at_one_over_0_07_and_is_clamped_to_one_and_100() -> None:
    model = create_model("mfclip-tiny")
    torch.testing.assert_close(model.current_logit_scale(), torch.tensor(1 / 0.07))
    for log_scale, expected in ((math.log(500.0), 100.0), (-2.0, 1.0)):
        raw = torch.tensor(log_scale, requires_grad=True)
        clamped = clamped_logit_scale(raw, 100.0)
        torch.testing.assert_close(clamped, torch.tensor(expected))
        clamped.backward()
        assert raw.grad == 0
    with torch.no_grad():
        model.logit_scale.fill_(-3.0)
    torch.testing.assert_close(model.current_logit_scale(), torch.tensor(1.0))


@pytest.mark.parametrize("spa_mode", ["content", "matrix", "none"])
def test_losses_under_bf16_autocast_are_the_float32_losses(spa_mode: str) -> None:
    from test_model import images, prompt_batch

    torch.manual_seed(0)
    model = create_model("mfclip-tiny", **{"spa.mode": spa_mode}).train()
    if model.spa is not None and spa_mode == "content":
        with torch.no_grad():
            model.spa.out.weight.normal_()  # gates that depend on the pair
    tokens, mask, labels = prompt_batch()
    output = model(images(), tokens, mask)
    expected = model.compute_loss(output, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.compute_loss(output, labels)
    for key, value in expected.items():
        assert mixed[key].dtype == torch.float32, key
        torch.testing.assert_close(mixed[key], value, rtol=1e-6, atol=1e-6, msg=key)


def test_a_bfloat16_model_computes_its_losses_in_float32() -> None:
    from test_model import images, prompt_batch

    torch.manual_seed(0)
    model = create_model("mfclip-tiny").train()
    tokens, mask, labels = prompt_batch()
    reference = model.compute_loss(model(images(), tokens, mask), labels)
    half = model.to(torch.bfloat16)
    output = half(images(), tokens, mask)
    assert output.image_features.dtype == torch.bfloat16
    losses = half.compute_loss(output, labels)
    assert all(value.dtype == torch.float32 for value in losses.values())
    losses["loss"].backward()
    assert half.spa.out.weight.grad is not None and half.logit_scale.grad is not None
    torch.testing.assert_close(losses["loss"], reference["loss"], rtol=0.05, atol=0.05)


def test_text_free_config_never_runs_a_text_tower_even_with_prompts() -> None:
    model = create_model("mfclip-tiny", losses={"cmc": 0, "kl": 0}).train()
    assert model.text is None and model.predictor is None and model.spa is None and model.logit_scale is None
    tokens = torch.zeros(2, 4, 77, dtype=torch.long)
    output = model(torch.rand(2, 3, 64, 64), tokens)
    assert output.text_features is None
    losses = model.compute_loss(output, torch.tensor([0, 1]))
    assert set(losses) == {"ce", "loss"}


def batch_with_prompts() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from mfclip.prompts import load_prompt_set, tokenize

    prompt_set = load_prompt_set()
    specs = [
        (0, None, None, None),
        (1, None, None, "SDXL"),
        (1, "face_swap", None, None),
        (0, None, None, None),
    ]
    rows = [prompt_set.prompts_for(*spec) for spec in specs]
    tokens = torch.stack([tokenize(texts) for texts, _ in rows])
    return torch.rand(4, 3, 64, 64), tokens, torch.tensor([spec[0] for spec in specs])


def test_loss_weights_scale_each_term() -> None:
    torch.manual_seed(0)
    model = create_model("mfclip-tiny", **{"losses.ce": 0.25, "losses.cmc": 0.5, "losses.kl": 2.0}).train()
    images, tokens, labels = batch_with_prompts()
    losses = model.compute_loss(model(images, tokens), labels)
    expected = 0.25 * losses["ce"] + 0.5 * losses["cmc"] + 2.0 * losses["kl"]
    torch.testing.assert_close(losses["loss"].detach(), expected)


def test_ce_weight_zero_switches_ce_off_and_freezes_the_head() -> None:
    torch.manual_seed(0)
    model = create_model("mfclip-tiny", **{"losses.ce": 0}).train()
    assert not any(p.requires_grad for p in model.head.parameters())
    images, tokens, labels = batch_with_prompts()
    losses = model.compute_loss(model(images, tokens), labels)
    assert "ce" not in losses
    torch.testing.assert_close(losses["loss"].detach(), losses["cmc"] + losses["kl"])
    losses["loss"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_at_least_one_loss_term_must_be_on() -> None:
    from mfclip.utils.config import ConfigError

    with pytest.raises(ConfigError, match=r"at least one of losses\.ce, losses\.cmc and losses\.kl"):
        create_model("mfclip-tiny", losses={"ce": 0, "cmc": 0, "kl": 0})
    with pytest.raises(ConfigError, match=r"losses\.ce"):
        create_model("mfclip-tiny", **{"losses.ce": -1})


def test_labels_outside_real_and_fake_are_rejected() -> None:
    model = create_model("mfclip-tiny", losses={"cmc": 0, "kl": 0})
    output = model(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match=r"labels must be 0 \(real\) or 1 \(fake\), got 3"):
        model.compute_loss(output, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="got -1"):
        model.compute_loss(output, torch.tensor([-1, 1]))
