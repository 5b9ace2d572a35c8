"""Sample pair attention (SPA): a gate in (0, 1) for every image–text pair of the contrastive logits.

The gated logit matrix is S_ij = exp(s) · (v̂_i · t̂_j) · g_ij. Modes:

- ``content`` (default): g_ij = σ(wᵀ GELU(a_ij·u + b_ij·r + P v̂_i + c) + β) with a_ij = v̂_i·t̂_j,
  b_ij = t̂_i·t̂_j. It depends on the pair's content only, so it is the same whatever the batch size or
  order and works with features gathered across processes. w starts at zero and β at logit(init_gate),
  so every gate starts at exactly ``init_gate``.
- ``matrix``: the released form, g_ij = σ(W_ij) with W a learnable max_batch × max_batch matrix indexed
  by batch position (initialised to logit(init_gate); a batch of B uses W[:B, :B]).
- ``none``: no gate (plain CLIP InfoNCE).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mfclip.models.config import SPAConfig


class SamplePairAttention(nn.Module):
    """Gates for a block of the logit matrix: rows are images (or texts), columns texts (or images)."""

    def __init__(self, config: SPAConfig, embed_dim: int) -> None:
        super().__init__()
        self.config = config
        self.mode = config.mode
        init_logit = math.log(config.init_gate / (1.0 - config.init_gate))
        if config.mode == "content":
            self.pair_weights = nn.Parameter(torch.randn(2, config.hidden))
            self.image_proj = nn.Linear(embed_dim, config.hidden)
            self.out = nn.Linear(config.hidden, 1)
            nn.init.zeros_(self.out.weight)
            nn.init.constant_(self.out.bias, init_logit)
        elif config.mode == "matrix":
            self.gate_logits = nn.Parameter(torch.full((config.max_batch, config.max_batch), init_logit))

    def forward(
        self,
        image_rows: torch.Tensor,
        text_rows: torch.Tensor,
        text_cols: torch.Tensor,
        row_start: int = 0,
        col_start: int = 0,
    ) -> torch.Tensor | None:
        """Gates g[r, c] for images ``image_rows`` (paired with ``text_rows``) against texts ``text_cols``.

        Features are L2-normalised. ``row_start``/``col_start`` locate the block inside the full
        batch; only ``matrix`` mode uses them. Returns None in ``none`` mode.
        """
        if self.mode == "none":
            return None
        if self.mode == "matrix":
            rows, cols = image_rows.shape[0], text_cols.shape[0]
            needed = max(row_start + rows, col_start + cols)
            if needed > self.config.max_batch:
                raise ValueError(
                    f"spa.mode 'matrix' supports batches of at most {self.config.max_batch} "
                    f"(spa.max_batch); got a batch of {needed}. Raise spa.max_batch or use spa.mode 'content'"
                )
            block = self.gate_logits[row_start : row_start + rows, col_start : col_start + cols]
            return torch.sigmoid(block.to(image_rows.dtype))
        # The gate runs in the features' dtype (float32 in the losses), whatever the dtype of its weights.
        dtype = image_rows.dtype
        image_text = image_rows @ text_cols.T  # a_ij
        text_text = text_rows @ text_cols.T  # b_ij
        pair_weights = self.pair_weights.to(dtype)
        projected = F.linear(image_rows, self.image_proj.weight.to(dtype), self.image_proj.bias.to(dtype))
        hidden = (
            image_text.unsqueeze(-1) * pair_weights[0]
            + text_text.unsqueeze(-1) * pair_weights[1]
            + projected.unsqueeze(1)
        )
        gate_logits = F.linear(F.gelu(hidden), self.out.weight.to(dtype), self.out.bias.to(dtype))
        return torch.sigmoid(gate_logits.squeeze(-1))
