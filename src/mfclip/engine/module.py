"""The LightningModule that trains any :class:`~mfclip.models.base.DetectorModel`.

Training: forward with the prompt tokens when the model has a text tower, ``compute_loss`` with a
gradient-keeping all-gather when several processes train (so the contrastive loss and content SPA see the
global batch), every loss term logged under ``train/``. Validation: P(fake) of every validation row →
``val/auc`` (the checkpoint criterion), ``val/acc`` at 0.5 and ``val/loss`` (cross-entropy of the head),
each reduced over all processes. Optimiser: Adam with the CLIP towers that received pretrained weights at
``lr_pretrained`` and the rest (randomly initialised towers included) at ``lr``, no weight decay on biases,
normalisation layers, 1-D parameters and the logit scale, decayed by ``gamma`` every ``step_size_epochs``
epochs after an optional linear warmup. Which group each tower is in is logged when training starts and
kept in the checkpoints, so a resumed run keeps its groups.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from mfclip.engine.config import OptimSection
from mfclip.engine.distributed import gather_for_loss
from mfclip.models.base import DetectorModel
from mfclip.utils.config import ConfigError

# Key of a Lightning checkpoint recording which CLIP towers trained in the ``pretrained`` group.
PRETRAINED_TOWERS_KEY = "mfclip_pretrained_towers"


class DetectorModule(L.LightningModule):
    """Trains ``model``; ``hparams`` hold the model config (``model``) and the full training config.

    The hyper-parameters make a Lightning checkpoint self-describing: ``load_checkpoint(RUN/checkpoints/
    best.ckpt)`` rebuilds the model from ``hyper_parameters["model"]``.
    """

    def __init__(
        self,
        model: DetectorModel,
        optim: OptimSection | dict[str, Any],
        train_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.optim = optim if isinstance(optim, OptimSection) else OptimSection.from_dict(optim)
        self.save_hyperparameters(
            {
                "model": model.config.to_dict(),
                "optim": self.optim.to_dict(),
                "train_config": train_config or {},
            }
        )
        self.val_auc = BinaryAUROC()
        self.val_acc = BinaryAccuracy(threshold=0.5)
        self.val_loss = MeanMetric()

    # ---- training ---------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> Any:
        if self.model.uses_text():
            return self.model(batch["image"], batch["prompt_tokens"], batch["prompt_mask"])
        return self.model(batch["image"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        output = self(batch)
        losses = self.model.compute_loss(
            output, batch["label"], gather=gather_for_loss(self.trainer.world_size)
        )
        size = int(batch["label"].shape[0])
        for name, value in losses.items():
            self.log(
                f"train/{name}",
                value.detach().float(),
                on_step=True,
                on_epoch=name == "loss",
                prog_bar=name == "loss",
                batch_size=size,
                sync_dist=name == "loss",
            )
        return losses["loss"]

    # ---- validation -------------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        if batch is None:  # every image of the batch was unreadable (and counted by the dataset)
            return
        labels = batch["label"]
        logits = self.model(batch["image"]).logits.float()
        p_fake = logits.softmax(dim=-1)[:, 1]
        self.val_auc.update(p_fake, labels)
        self.val_acc.update(p_fake, labels)
        self.val_loss.update(F.cross_entropy(logits, labels), weight=labels.shape[0])

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            # A few sanity batches may hold one class only; their AUC means nothing.
            for metric in (self.val_auc, self.val_acc, self.val_loss):
                metric.reset()
            return
        values = {
            "val/auc": self.val_auc.compute(),
            "val/acc": self.val_acc.compute(),
            "val/loss": self.val_loss.compute(),
        }
        for metric in (self.val_auc, self.val_acc, self.val_loss):
            metric.reset()
        # Already reduced over all processes by the metrics; every process logs the same values.
        self.log_dict({k: v.float() for k, v in values.items()}, prog_bar=True, sync_dist=True)

    # ---- optimisation -----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[PRETRAINED_TOWERS_KEY] = sorted(self.model.pretrained_towers)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Runs before configure_optimizers on resume: the towers keep the groups they trained in.
        towers = checkpoint.get(PRETRAINED_TOWERS_KEY)
        if towers is None:
            if "optimizer_states" in checkpoint:
                raise ConfigError(
                    "the checkpoint records no optimiser groups (written by an mfclip version before "
                    "pretrained and randomly initialised towers were told apart), so its optimiser state "
                    "cannot be resumed; start a new run"
                )
            return
        self.model.pretrained_towers = set()
        self.model.mark_pretrained(towers)

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """The optimiser's parameter groups: (pretrained | new) × (with | without weight decay).

        ``pretrained`` holds the CLIP towers that received pretrained weights, at ``lr_pretrained``;
        ``new`` everything else, at ``lr``. The ``*_no_decay`` groups hold what
        :meth:`~mfclip.models.base.DetectorModel.no_weight_decay` names, at weight decay 0.
        """
        optim = self.optim
        groups = self.model.parameter_groups()
        exempt_names = self.model.no_weight_decay()
        exempt = {id(p) for name, p in self.model.named_parameters() if name in exempt_names}
        result = []
        for group, lr in (("pretrained", optim.lr_pretrained), ("new", optim.lr)):
            params = groups.get(group, [])
            for suffix, decay, chosen in (
                ("", optim.weight_decay, [p for p in params if id(p) not in exempt]),
                ("_no_decay", 0.0, [p for p in params if id(p) in exempt]),
            ):
                if chosen:
                    result.append({"params": chosen, "lr": lr, "weight_decay": decay, "name": group + suffix})
        return result

    def describe_groups(self) -> str:
        """One line per CLIP tower and one for the rest: its group, learning rate and why."""
        optim = self.optim
        lines = []
        for name, tower in self.model.clip_towers().items():
            if tower is None:
                continue
            origin = "pretrained weights" if name in self.model.pretrained_towers else "randomly initialised"
            if not any(p.requires_grad for p in tower.parameters()):
                lines.append(f"  {name} tower: frozen ({origin})")
            elif name in self.model.pretrained_towers:
                lines.append(f"  {name} tower: pretrained group, lr {optim.lr_pretrained:g} ({origin})")
            else:
                lines.append(f"  {name} tower: new group, lr {optim.lr:g} ({origin})")
        for name in sorted(self.model.pretrained_towers - set(self.model.clip_towers())):
            lines.append(f"  {name}: pretrained group, lr {optim.lr_pretrained:g} (pretrained weights)")
        lines.append(f"  every other parameter: new group, lr {optim.lr:g}")
        exempt = sum(len(g["params"]) for g in self.optimizer_groups() if g["name"].endswith("_no_decay"))
        lines.append(
            f"  weight decay {optim.weight_decay:g}, except {exempt} bias, normalisation, 1-D and "
            "logit-scale parameters (0)"
        )
        return "optimiser parameter groups:\n" + "\n".join(lines)

    def configure_optimizers(self) -> dict[str, Any]:
        optim = self.optim
        param_groups = self.optimizer_groups()
        if not param_groups:
            raise ValueError(f"{type(self.model).__name__} has no trainable parameters")
        rank_zero_info(self.describe_groups())
        optimizer_class = torch.optim.AdamW if optim.name == "adamw" else torch.optim.Adam
        optimizer = optimizer_class(
            param_groups, lr=optim.lr, betas=optim.betas, eps=optim.eps, weight_decay=optim.weight_decay
        )
        trainer = self.trainer

        def steps_per_epoch() -> int:
            batches = trainer.num_training_batches
            if not math.isfinite(batches) or batches <= 0:
                return 1
            return max(1, math.ceil(batches / trainer.accumulate_grad_batches))

        schedule = step_decay_schedule(
            optim.warmup_steps, optim.step_size_epochs, optim.gamma, steps_per_epoch
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def step_decay_schedule(warmup_steps: int, step_size_epochs: int, gamma: float, steps_per_epoch: Any) -> Any:
    """Learning-rate factor after ``step`` optimizer steps: linear warmup, then ×gamma every N epochs.

    ``steps_per_epoch`` is a callable (the number is known only once the training data is set up). The
    epoch of a step is ``step // steps_per_epoch()``, so the decay falls exactly at epoch boundaries, as a
    per-epoch ``StepLR`` would, while the warmup can ramp within the first epoch.
    """

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
        epoch = step // steps_per_epoch()
        return warm * gamma ** (epoch // step_size_epochs)

    return factor
