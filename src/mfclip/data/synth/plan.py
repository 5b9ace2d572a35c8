"""Which image is which: a deterministic plan of split, generator and identity for every index."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mfclip.data.synth.generators import (
    GENERATORS_BY_NAME,
    SEEN_GENERATORS,
    SYNTH_GENERATORS,
    UNSEEN_GENERATORS,
)
from mfclip.schema import SPLITS

SPLIT_SHARES = {"train": 0.6, "val": 0.1, "test": 0.3}  # of reals and of each seen generator
REAL_SHARE = 0.45
SEEN_SHARE = 0.40  # all seen generators together
UNSEEN_SHARE = 0.15  # all unseen generators together (test split only)
IMAGES_PER_IDENTITY = 4
REAL = "real"
# Identity namespaces: people photographed (reals, and the targets of swaps and edits), swap sources,
# and the people each entire-synthesis generator invents.
NAMESPACE_PEOPLE = 0
NAMESPACE_SWAP_SOURCE = 1


def _cells() -> list[tuple[str, str, float]]:
    """(split, real-or-generator, share of the whole benchmark) for every non-empty cell."""
    cells = [(split, REAL, REAL_SHARE * SPLIT_SHARES[split]) for split in SPLITS]
    for name in SEEN_GENERATORS:
        cells += [(split, name, SEEN_SHARE / len(SEEN_GENERATORS) * SPLIT_SHARES[split]) for split in SPLITS]
    cells += [("test", name, UNSEEN_SHARE / len(UNSEEN_GENERATORS)) for name in UNSEEN_GENERATORS]
    return cells


MIN_SIZE = len(_cells()) + 5
#: The largest benchmark: the plan of every image is held in memory, so a mistyped size must not
#: exhaust it (a million images at 224 px are about 15 GB of JPEG).
MAX_SIZE = 1_000_000


@dataclass(frozen=True)
class PlanEntry:
    """One image of the benchmark."""

    index: int
    split: str
    generator: str  # "real" or a generator name
    identity: int
    namespace: int
    source_identity: int  # the swap source (face swap only, else -1)

    @property
    def label(self) -> int:
        return 0 if self.generator == REAL else 1

    @property
    def relative_path(self) -> str:
        return f"images/{self.split}/{self.generator}/{self.index:06d}.jpg"

    @property
    def video_id(self) -> str:
        """One id per (synthetic person, generator): the unit of video-level aggregation."""
        if self.generator == REAL:
            return f"{self.split}-person{self.identity:04d}"
        if self.namespace == NAMESPACE_PEOPLE:
            return f"{self.split}-person{self.identity:04d}-{self.generator}"
        return f"{self.split}-{self.generator}-{self.identity:04d}"

    def manifest_row(self) -> dict[str, str | int]:
        info = GENERATORS_BY_NAME.get(self.generator)
        return {
            "path": self.relative_path,
            "label": self.label,
            "split": self.split,
            "dataset": "synthetic",
            "forgery_type": info.forgery_type if info else "",
            "family": info.family if info else "",
            "generator": info.name if info else "",
            "video_id": self.video_id,
        }


def cell_counts(size: int) -> dict[tuple[str, str], int]:
    """Images per (split, generator) cell: one each, the rest by share (largest remainder)."""
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE} (one image per split and generator), got {size}")
    cells = _cells()
    spare = size - len(cells)
    exact = np.array([share for *_, share in cells]) * spare
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: spare - counts.sum()]] += 1
    return {(split, name): int(n) + 1 for (split, name, _), n in zip(cells, counts, strict=True)}


def build_plan(seed: int, size: int) -> list[PlanEntry]:
    """Every image's split, generator and identity; a pure function of ``(seed, size)``."""
    counts = cell_counts(size)
    entries: list[tuple[str, str, int, int, int]] = []
    for split_code, split in enumerate(SPLITS):
        real_people = max(1, -(-counts.get((split, REAL), 0) // IMAGES_PER_IDENTITY))
        in_split: list[tuple[str, str, int, int, int]] = []
        for (cell_split, name), n in counts.items():
            if cell_split != split:
                continue
            info = GENERATORS_BY_NAME.get(name)
            for j in range(n):
                group = j // IMAGES_PER_IDENTITY
                if info is None:
                    in_split.append((split, name, group, NAMESPACE_PEOPLE, -1))
                elif info.forgery_type == "entire_synthesis":
                    namespace = 2 + [g.name for g in SYNTH_GENERATORS].index(name)
                    in_split.append((split, name, group, namespace, -1))
                else:
                    source = j if info.forgery_type == "face_swap" else -1
                    in_split.append((split, name, group % real_people, NAMESPACE_PEOPLE, source))
        order = np.random.default_rng(np.random.SeedSequence([seed, 7, split_code])).permutation(
            len(in_split)
        )
        entries += [in_split[i] for i in order]
    return [
        PlanEntry(index=i, split=s, generator=g, identity=ident, namespace=ns, source_identity=src)
        for i, (s, g, ident, ns, src) in enumerate(entries)
    ]


def split_code(split: str) -> int:
    return SPLITS.index(split)
