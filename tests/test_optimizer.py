"""The training optimiser: groups by what was loaded, open_clip's weight-decay exclusions, resumed groups."""

from __future__ import annotations

import logging

import pytest
import torch

from mfclip.engine.config import OptimSection
from mfclip.engine.module import PRETRAINED_TOWERS_KEY, DetectorModule
from mfclip.models.registry import create_model
from mfclip.models.weights import load_clip_weights_into
from mfclip.utils.config import ConfigError

OPTIM = OptimSection(lr=1e-3, lr_pretrained=1e-5, weight_decay=0.1)


def visual_weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    tower = create_model("mfclip-tiny").clip_towers()["visual"]
    return {f"visual.{k}": v for k, v in tower.state_dict().items()}


def groups_by_name(module: DetectorModule) -> dict[str, dict]:
    return {group["name"]: group for group in module.optimizer_groups()}


def module_with_pretrained_image_tower() -> DetectorModule:
    model = create_model("mfclip-tiny")
    load_clip_weights_into(model, visual_weights(), strict=False)
    return DetectorModule(model, OPTIM)


def test_a_fresh_model_trains_every_tower_at_the_new_rate() -> None:
    module = DetectorModule(create_model("mfclip-tiny"), OPTIM)
    groups = groups_by_name(module)
    assert set(groups) == {"new", "new_no_decay"}
    assert groups["new"]["lr"] == 1e-3 and groups["new"]["weight_decay"] == 0.1
    assert groups["new_no_decay"]["lr"] == 1e-3 and groups["new_no_decay"]["weight_decay"] == 0.0
    described = module.describe_groups()
    assert "visual tower: new group, lr 0.001 (randomly initialised)" in described
    assert "text tower: new group, lr 0.001 (randomly initialised)" in described


def test_loaded_towers_train_at_the_pretrained_rate_without_decay_on_gains_and_scale() -> None:
    module = module_with_pretrained_image_tower()
    model = module.model
    groups = groups_by_name(module)
    assert set(groups) == {"pretrained", "pretrained_no_decay", "new", "new_no_decay"}
    visual = {id(p) for p in model.clip_towers()["visual"].parameters()}
    assert {id(p) for name in ("pretrained", "pretrained_no_decay") for p in groups[name]["params"]} == visual
    assert groups["pretrained"]["lr"] == groups["pretrained_no_decay"]["lr"] == 1e-5
    no_decay = {id(p) for name in ("pretrained_no_decay", "new_no_decay") for p in groups[name]["params"]}
    named = dict(model.named_parameters())
    assert id(named["logit_scale"]) in no_decay and id(named["head.0.weight"]) in no_decay
    assert id(named["vision.clip_vit.transformer.resblocks.0.ln_1.weight"]) in no_decay
    assert id(named["vision.clip_vit.transformer.resblocks.0.attn.in_proj_weight"]) not in no_decay
    assert id(named["head.1.weight"]) not in no_decay
    # Every trainable parameter is in exactly one group.
    all_ids = [id(p) for group in groups.values() for p in group["params"]]
    assert sorted(all_ids) == sorted(id(p) for p in model.parameters() if p.requires_grad)
    described = module.describe_groups()
    assert "visual tower: pretrained group, lr 1e-05 (pretrained weights)" in described
    assert "text tower: new group, lr 0.001 (randomly initialised)" in described


def test_configure_optimizers_logs_the_groups_and_applies_them() -> None:
    module = module_with_pretrained_image_tower()

    class Trainer:  # what configure_optimizers reads of a trainer
        num_training_batches = 4
        accumulate_grad_batches = 1

    module.trainer = Trainer()  # type: ignore[assignment]
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    notices = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    notices.addHandler(handler)
    try:
        optimizer = module.configure_optimizers()["optimizer"]
    finally:
        notices.removeHandler(handler)
    assert any("visual tower: pretrained group" in message for message in records)
    by_name = {g["name"]: g for g in optimizer.param_groups}
    assert by_name["pretrained"]["lr"] == 1e-5 and by_name["new_no_decay"]["weight_decay"] == 0.0


def test_a_frozen_tower_is_reported_as_frozen() -> None:
    module = DetectorModule(create_model("clip-probe-tiny"), OPTIM)
    assert "visual tower: frozen (randomly initialised)" in module.describe_groups()


def test_resuming_keeps_the_groups_the_run_trained_with() -> None:
    module = module_with_pretrained_image_tower()
    checkpoint: dict = {"optimizer_states": [{}]}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint[PRETRAINED_TOWERS_KEY] == ["visual"]
    # A resumed run rebuilds the model without loading CLIP weights; the checkpoint restores the groups.
    resumed = DetectorModule(create_model("mfclip-tiny"), OPTIM)
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.model.pretrained_towers == {"visual"}
    assert [(g["name"], len(g["params"])) for g in resumed.optimizer_groups()] == [
        (g["name"], len(g["params"])) for g in module.optimizer_groups()
    ]
    with pytest.raises(ConfigError, match="records no optimiser groups"):
        resumed.on_load_checkpoint({"optimizer_states": [{}]})
