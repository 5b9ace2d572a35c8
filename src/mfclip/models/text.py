"""The fine-grained language encoder (FLE): four hierarchical prompts → one text feature ``t``.

The tower is an unmodified ``open_clip.transformer.TextTransformer`` (77 positions, vocabulary 49,408),
so pretrained CLIP text weights load into it as they are. Pooling modes:

- ``per_level``: each configured level is encoded on its own, then the level features are fused by a
  masked mean or a learned softmax-weighted sum;
- ``concat_last``: the configured levels' 77-token blocks are concatenated into one causal sequence and
  pooled at the end-of-text token of the row's last known level; the blocks of unknown levels (which
  hold fallback prompts) are hidden from attention, so only known levels reach the pooled feature;
- ``concat_first``: the released behaviour, pooled at the end-of-text token of the first prompt (later
  levels cannot change the feature).

Because the tower is causal, tokens after the pooled position cannot change the result; sequences are
cut just after the last pooled position of the batch, and distinct token rows are encoded once.

Prompt features computed without gradient are cached by content. The cache is keyed on every
parameter's storage and version counter (so optimiser steps, ``copy_`` and replaced tensors invalidate
it) and is also dropped by ``load_state_dict``, ``to``/``half``/``cuda`` and ``train``/``eval``. Writes
through ``.data`` bypass the version counter: call :meth:`FineGrainedLanguageEncoder.clear_prompt_cache`
after them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from open_clip.transformer import LayerNorm, QuickGELU, TextTransformer
from torch import nn

from mfclip.models.config import TextConfig
from mfclip.prompts import CONTEXT_LENGTH, END_OF_TEXT, NUM_LEVELS, VOCAB_SIZE


def build_text_tower(config: TextConfig, embed_dim: int) -> TextTransformer:
    """An open_clip ``TextTransformer`` with standard state_dict keys, output dimension ``embed_dim``."""
    sizes = config.resolved()
    return TextTransformer(
        context_length=CONTEXT_LENGTH,
        vocab_size=VOCAB_SIZE,
        width=sizes["width"],
        heads=sizes["heads"],
        layers=sizes["layers"],
        mlp_ratio=sizes["mlp_ratio"],
        output_dim=embed_dim,
        act_layer=QuickGELU if sizes["quick_gelu"] else nn.GELU,
        norm_layer=LayerNorm,
    )


class FineGrainedLanguageEncoder(nn.Module):
    """Hierarchical prompt tokens (B, 4, 77) and their level mask (B, 4) → fused text feature (B, D)."""

    def __init__(self, config: TextConfig, embed_dim: int) -> None:
        super().__init__()
        self._cache: dict[bytes, torch.Tensor] = {}
        self._cache_key: tuple | None = None
        self.config = config
        self.levels = list(config.levels)
        self.tower = build_text_tower(config, embed_dim)
        width = self.tower.width
        self.level_logits: nn.Parameter | None = None
        self.concat_positional_embedding: nn.Parameter | None = None
        self.level_embedding: nn.Parameter | None = None
        if config.pooling == "per_level":
            if config.level_fusion == "learned":
                self.level_logits = nn.Parameter(torch.zeros(NUM_LEVELS))
        else:
            length = NUM_LEVELS * CONTEXT_LENGTH
            if config.concat_positions == "independent":
                self.concat_positional_embedding = nn.Parameter(torch.empty(length, width))
                nn.init.normal_(self.concat_positional_embedding, std=0.01)
                # The tower's own 77 positions are not used in this mode.
                self.tower.positional_embedding.requires_grad_(False)
            else:
                self.level_embedding = nn.Parameter(torch.zeros(NUM_LEVELS, width))
            causal = torch.full((length, length), float("-inf")).triu_(1)
            self.register_buffer("concat_attn_mask", causal, persistent=False)
        if config.freeze:
            for param in self.parameters():
                param.requires_grad_(False)

    @property
    def output_dim(self) -> int:
        return int(self.tower.output_dim)

    # ---- public API -------------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Fused text feature ``t`` (B, D), unnormalised."""
        tokens, mask = self._check(tokens, mask)
        if self.config.pooling == "per_level":
            features = self.encode_levels(tokens)  # (B, L, D)
            return self._fuse(features, mask)
        sequences, pool_index, hidden = self._concat(tokens, mask)
        return self._encode_unique(sequences, pool_index, hidden=hidden)

    def encode_levels(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-level features (B, len(levels), D) of the configured levels, each prompt encoded alone."""
        batch = tokens.shape[0]
        rows = tokens[:, [lvl - 1 for lvl in self.levels]].reshape(-1, CONTEXT_LENGTH)
        features = self._encode_unique(rows, rows.argmax(dim=-1))
        return features.reshape(batch, len(self.levels), -1)

    def encode_prompt_table(self, tokens: torch.Tensor) -> torch.Tensor:
        """Features of a fixed prompt set, cached by content while the weights do not change.

        ``tokens`` is (N, 77) for single prompts (encoded by the standard 77-position tower) or
        (N, 4, 77) for full hierarchical rows (pooled and fused as in :meth:`forward`, all levels known).
        """
        with torch.no_grad():
            if tokens.dim() == 2:
                tokens = self._check_rows(tokens)
                return self._encode_unique(tokens, tokens.argmax(dim=-1), use_cache=True)
            tokens, mask = self._check(tokens, None)
            if self.config.pooling == "per_level":
                batch = tokens.shape[0]
                rows = tokens[:, [lvl - 1 for lvl in self.levels]].reshape(-1, CONTEXT_LENGTH)
                feats = self._encode_unique(rows, rows.argmax(dim=-1), use_cache=True)
                return self._fuse(feats.reshape(batch, len(self.levels), -1), mask)
            sequences, pool_index, hidden = self._concat(tokens, mask)
            return self._encode_unique(sequences, pool_index, use_cache=True, hidden=hidden)

    def clear_prompt_cache(self) -> None:
        """Drop the cached prompt features."""
        self._cache.clear()
        self._cache_key = None

    def train(self, mode: bool = True) -> FineGrainedLanguageEncoder:
        self.clear_prompt_cache()
        return super().train(mode)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> nn.Module:
        self.clear_prompt_cache()  # to(), half(), cuda(), ...
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self.clear_prompt_cache()
        super()._load_from_state_dict(*args, **kwargs)

    # ---- internals --------------------------------------------------------------------------------
    def _check(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if (
            not isinstance(tokens, torch.Tensor)
            or tokens.dim() != 3
            or tuple(tokens.shape[1:])
            != (
                NUM_LEVELS,
                CONTEXT_LENGTH,
            )
        ):
            shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(
                f"prompt_tokens must have shape (B, {NUM_LEVELS}, {CONTEXT_LENGTH}), got {shape}"
            )
        if tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"prompt_tokens must be an integer tensor, got {tokens.dtype}")
        tokens = tokens.long()
        configured = torch.zeros(NUM_LEVELS, dtype=torch.bool, device=tokens.device)
        configured[[lvl - 1 for lvl in self.levels]] = True
        _check_token_values(tokens, "prompt_tokens", needs_end_of_text=configured)
        if mask is None:
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        elif tuple(mask.shape) != tuple(tokens.shape[:2]):
            raise ValueError(
                f"prompt_mask must have shape {tuple(tokens.shape[:2])}, got {tuple(mask.shape)}"
            )
        return tokens, mask.to(device=tokens.device, dtype=torch.bool)

    @staticmethod
    def _check_rows(tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[-1] != CONTEXT_LENGTH or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"prompt tokens must be integer rows of {CONTEXT_LENGTH}, got {tuple(tokens.shape)}"
            )
        tokens = tokens.long()
        _check_token_values(tokens, "prompt tokens")
        return tokens

    def _used_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, len(levels)) bool: levels that are configured and known; rows knowing none use all."""
        used = mask[:, [lvl - 1 for lvl in self.levels]]
        empty = ~used.any(dim=1, keepdim=True)
        return used | empty

    def _fuse(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        used = self._used_mask(mask)
        if self.level_logits is not None:
            logits = self.level_logits[[lvl - 1 for lvl in self.levels]].to(features.dtype)
            logits = logits.unsqueeze(0).expand(used.shape).masked_fill(~used, float("-inf"))
            weights = logits.softmax(dim=1)
        else:
            weights = used.to(features.dtype)
            weights = weights / weights.sum(dim=1, keepdim=True)
        return (features * weights.unsqueeze(-1)).sum(dim=1)

    def _concat(
        self, tokens: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The configured levels' blocks side by side, each row's pooling position, and the blocks to hide.

        ``concat_last`` pools at the end of the last known level and hides the unknown levels' blocks
        ((B, len(levels)) bool, None when no row has one); ``concat_first`` pools at the first block's
        end, which nothing after it can reach, so it hides nothing.
        """
        blocks = tokens[:, [lvl - 1 for lvl in self.levels]]  # (B, L, 77)
        sequences = blocks.reshape(tokens.shape[0], -1)
        eot = blocks.argmax(dim=-1)  # (B, L) end-of-text position inside each block
        if self.config.pooling == "concat_first":
            return sequences, eot[:, 0], None
        used = self._used_mask(mask)
        positions = torch.arange(len(self.levels), device=tokens.device)
        last = torch.where(used, positions, torch.full_like(positions, -1)).amax(dim=1)
        pool_index = last * CONTEXT_LENGTH + eot.gather(1, last.unsqueeze(1)).squeeze(1)
        hidden = ~used
        return sequences, pool_index, hidden if bool(hidden.any()) else None

    def _weights_key(self) -> tuple:
        first = next(self.parameters())
        states = tuple((p.data_ptr(), p._version) for p in self.parameters())
        return (first.device, first.dtype, torch.is_inference_mode_enabled(), states)

    def _encode_unique(
        self,
        rows: torch.Tensor,
        pool_index: torch.Tensor,
        use_cache: bool | None = None,
        hidden: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode each distinct (row, pool position, hidden blocks) once and scatter the features back."""
        if use_cache is None:
            # Features are cached only where no gradient can flow into the tower.
            use_cache = not torch.is_grad_enabled() or not any(p.requires_grad for p in self.parameters())
        width = rows.shape[1]
        parts = [rows, pool_index.unsqueeze(1)] + ([hidden.long()] if hidden is not None else [])
        keyed = torch.cat(parts, dim=1)
        unique, inverse = torch.unique(keyed, dim=0, return_inverse=True)

        def encode(selected: torch.Tensor) -> torch.Tensor:
            blocks = selected[:, width + 1 :].bool() if hidden is not None else None
            return self._encode(selected[:, :width], selected[:, width], blocks)

        if not use_cache:
            return encode(unique)[inverse]
        key = self._weights_key()
        if key != self._cache_key:
            self._cache.clear()
            self._cache_key = key
        unique_cpu = unique.cpu()
        names = [row.numpy().tobytes() for row in unique_cpu]
        missing = [i for i, name in enumerate(names) if name not in self._cache]
        if missing:
            idx = torch.tensor(missing, device=unique.device)
            with torch.no_grad():
                encoded = encode(unique[idx])
            for i, feature in zip(missing, encoded, strict=True):
                self._cache[names[i]] = feature
        return torch.stack([self._cache[name] for name in names])[inverse]

    def _encode(
        self, rows: torch.Tensor, pool_index: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Run the tower on token rows, cut after the last pooled position, pool at ``pool_index``.

        ``hidden`` (N, len(levels)) bool marks 77-token blocks that no other token may attend to.
        """
        tower = self.tower
        length = int(pool_index.max().item()) + 1
        rows = rows[:, :length]
        cast_dtype = tower.transformer.get_cast_dtype()
        x = tower.token_embedding(rows).to(cast_dtype)
        if self.config.pooling == "per_level":
            x = x + tower.positional_embedding[:length].to(cast_dtype)
            attn_mask = tower.attn_mask[:length, :length]
        else:
            x = x + self._concat_positions(length).to(cast_dtype)
            attn_mask = self.concat_attn_mask[:length, :length]
            if hidden is not None and bool(hidden.any()):
                attn_mask = self._hide_blocks(attn_mask, hidden, length)
        x = tower.transformer(x, attn_mask=attn_mask)
        x = tower.ln_final(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), pool_index]
        projection = tower.text_projection
        if projection is None:
            return pooled
        if isinstance(projection, nn.Linear):
            return projection(pooled)
        return pooled @ projection

    def _hide_blocks(self, causal: torch.Tensor, hidden: torch.Tensor, length: int) -> torch.Tensor:
        """Per-row attention masks (N·heads, length, length): the causal mask with the keys of hidden
        blocks removed. Each token still sees itself, so no attention row is empty."""
        keys_hidden = hidden.repeat_interleave(CONTEXT_LENGTH, dim=1)[:, :length]  # (N, length)
        masks = causal.unsqueeze(0).repeat(hidden.shape[0], 1, 1)
        masks.masked_fill_(keys_hidden.unsqueeze(1), float("-inf"))
        masks.diagonal(dim1=1, dim2=2).zero_()
        return masks.repeat_interleave(self.tower.heads, dim=0)

    def _concat_positions(self, length: int) -> torch.Tensor:
        if self.concat_positional_embedding is not None:
            return self.concat_positional_embedding[:length]
        assert self.level_embedding is not None
        level_ids = [lvl - 1 for lvl in self.levels]
        positions = self.tower.positional_embedding.repeat(len(level_ids), 1)
        offsets = self.level_embedding[level_ids].repeat_interleave(CONTEXT_LENGTH, dim=0)
        return (positions + offsets)[:length]


def _check_token_values(
    tokens: torch.Tensor, name: str, needs_end_of_text: torch.Tensor | None = None
) -> None:
    """Token ids must lie in the CLIP vocabulary and each prompt must hold an end-of-text token.

    ``needs_end_of_text`` (over the second-to-last dimension) limits the end-of-text check to some rows.
    """
    if tokens.numel() == 0:
        return
    has_end = (tokens == END_OF_TEXT).any(dim=-1)
    if needs_end_of_text is not None:
        has_end = has_end | ~needs_end_of_text
    low, high, complete = torch.stack([tokens.min(), tokens.max(), has_end.all().long()]).tolist()
    if low < 0 or high >= VOCAB_SIZE:
        bad = low if low < 0 else high
        raise ValueError(
            f"{name} holds token id {bad}, outside the CLIP vocabulary 0..{VOCAB_SIZE - 1}; "
            "tokenize prompts with mfclip.prompts.tokenize"
        )
    if not complete:
        where = tuple((~has_end).nonzero()[0].tolist())
        raise ValueError(
            f"{name}{list(where)} has no end-of-text token ({END_OF_TEXT}); "
            "tokenize prompts with mfclip.prompts.tokenize"
        )
