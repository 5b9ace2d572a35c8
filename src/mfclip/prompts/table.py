"""Prompt tokens for many labelled rows, each distinct prompt combination tokenized once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from mfclip.prompts import PromptSet

LabelColumn = Sequence[Any] | np.ndarray | None


@dataclass(frozen=True)
class PromptTable:
    """Prompt tokens for every row, stored once per distinct prompt combination.

    ``tokens`` (U, 4, 77) int64 and ``mask`` (U, 4) bool hold the U distinct combinations; ``row_index``
    (N,) maps each row (in input order) to one of them; ``prompts`` holds the four texts of each.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    row_index: np.ndarray
    prompts: list[tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.row_index)

    def rows(self, positions: np.ndarray | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (k, 4, 77) and mask (k, 4) of the rows at ``positions`` (0-based, input order)."""
        unique = torch.as_tensor(self.row_index[np.asarray(positions, dtype=np.int64)])
        return self.tokens[unique], self.mask[unique]


def build_prompt_table(
    labels: Sequence[int] | np.ndarray,
    *,
    forgery_type: LabelColumn = None,
    family: LabelColumn = None,
    generator: LabelColumn = None,
    dataset: LabelColumn = None,
    prompt_set: str | PromptSet = "default",
) -> PromptTable:
    """Tokenize the prompts of N rows: ``labels`` 0 (real) / 1 (fake) and optional per-row label columns.

    Each column is a sequence of N values (None, NaN or empty: unknown) or None (unknown for every row).
    ``dataset`` limits a row's known levels to those its dataset supplies (``PromptSet.dataset_levels``).
    Every distinct (label, forgery type, family, generator, levels supplied) combination is resolved and
    tokenized once; real rows share one combination per set of supplied levels.

    Raises:
        ValueError: a label that is not 0 or 1 (naming its 0-based position), or a column whose length
            differs from ``labels``.
    """
    import pandas as pd

    from mfclip.prompts import CONTEXT_LENGTH, NUM_LEVELS, load_prompt_set, tokenize

    prompts = load_prompt_set(prompt_set) if isinstance(prompt_set, str) else prompt_set
    label_array = np.asarray(labels)
    count = len(label_array)
    valid = np.isin(label_array, [0, 1]) if count else np.ones(0, dtype=bool)
    if not valid.all():
        position = int(np.flatnonzero(~valid)[0])
        raise ValueError(
            f"row {position}: label must be 0 (real) or 1 (fake), got {label_array[position].item()!r}"
        )
    keys = pd.DataFrame({"label": label_array.astype(np.int64)})
    for name, column in (("forgery_type", forgery_type), ("family", family), ("generator", generator)):
        keys[name] = _text_column(column, count, name)
    datasets = _text_column(dataset, count, "dataset")
    supplied = {name: prompts.levels_supplied(name or None) for name in pd.unique(datasets)}
    keys["levels"] = ["".join("1" if known else "0" for known in supplied[name]) for name in datasets]
    keys.loc[keys["label"] == 0, ["forgery_type", "family", "generator"]] = ""  # reals read one prompt
    codes = keys.groupby(list(keys.columns), sort=False).ngroup().to_numpy()
    _, first_rows = np.unique(codes, return_index=True)
    combos: list[tuple[str, ...]] = []
    masks: list[list[bool]] = []
    for position in first_rows:
        label, forgery, fam, gen, _ = keys.iloc[position]
        texts, mask = prompts.prompts_for(
            int(label), forgery or None, fam or None, gen or None, datasets[position] or None
        )
        combos.append(tuple(texts))
        masks.append(mask)
    distinct = sorted({text for combo in combos for text in combo})
    if distinct:
        token_rows = tokenize(distinct)
        index_of = {text: i for i, text in enumerate(distinct)}
        index = torch.tensor([[index_of[t] for t in combo] for combo in combos], dtype=torch.long)
        tokens = token_rows[index].to(torch.int64)
    else:
        tokens = torch.zeros((0, NUM_LEVELS, CONTEXT_LENGTH), dtype=torch.int64)
    mask_tensor = torch.tensor(masks, dtype=torch.bool).reshape(len(combos), NUM_LEVELS)
    return PromptTable(tokens=tokens, mask=mask_tensor, row_index=codes.astype(np.int64), prompts=combos)


def _text_column(column: LabelColumn, count: int, name: str) -> np.ndarray:
    """A label column as N stripped strings, "" where unknown (None, NaN, empty)."""
    if column is None:
        return np.full(count, "", dtype=object)
    values = list(column)
    if len(values) != count:
        raise ValueError(f"{name} has {len(values)} values for {count} labels")
    return np.array([_as_text(value) for value in values], dtype=object)


def _as_text(value: Any) -> str:
    import pandas as pd

    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return ""
    return str(value).strip()
