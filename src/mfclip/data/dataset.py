"""A PyTorch dataset over a manifest: robust decoding, resize/augment, precomputed prompt tokens.

Each item is a dict ``image`` (3, S, S) float32 in [0, 1], ``label`` (int), ``prompt_tokens`` (4, 77)
int64, ``prompt_mask`` (4,) bool, ``index`` (the manifest row number) and ``path``; :func:`collate_batch`
stacks items into the batch dict every model takes.

Corrupt files met while loading follow a :class:`CorruptPolicy`: replaced by the next readable row
(training), dropped from the batch (evaluation: no duplicated predictions) or raised at once. Each
distinct corrupt file is counted in memory shared by all DataLoader workers; beyond the configured
limit :class:`TooManyCorruptFiles` stops the run and names the last files.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from torch.utils.data import Dataset

from mfclip.data.decode import DEFAULT_MAX_PIXELS, ImageDecodeError, load_image
from mfclip.data.manifest import ManifestError, cell_text, label_values, path_problem, spreadsheet_row
from mfclip.data.transforms import ImageTransform, TransformConfig
from mfclip.data.video import is_video_path
from mfclip.prompts import build_prompt_table
from mfclip.schema import REQUIRED_COLUMNS
from mfclip.utils.config import StrictConfig

logger = logging.getLogger(__name__)

# Manifest columns the prompts of a row are built from (besides its label).
PROMPT_COLUMNS = ("forgery_type", "family", "generator", "dataset")


class TooManyCorruptFiles(ValueError):
    """More corrupt files than the :class:`CorruptPolicy` allows; the message names the last ones."""


class CorruptPolicy(StrictConfig):
    """What to do with a file that fails to decode while loading.

    ``action``: ``replace`` returns the next readable row instead (keeps batch sizes; for training),
    ``drop`` leaves the sample out of its batch (for evaluation), ``raise`` stops at the first one.
    Limits, on distinct corrupt files across all workers (None: no limit): ``max_corrupt`` files, or
    more than ``max_corrupt_fraction`` of the dataset. The fraction also applies to the reads so far, so
    a mostly broken dataset stops early; both fractions count only from ``min_reads_for_fraction`` files
    (dataset size, reads) on, since a fraction of a handful of files says little.
    """

    action: Literal["replace", "drop", "raise"] = "replace"
    max_corrupt: Annotated[int, Field(ge=0)] | None = None
    max_corrupt_fraction: Annotated[float, Field(ge=0.0, le=1.0)] | None = 0.01
    min_reads_for_fraction: Annotated[int, Field(ge=1)] = 1000
    max_replacement_tries: Annotated[int, Field(ge=1)] = 16


@dataclass(frozen=True)
class DroppedSample:
    """Stands in for an item whose file could not be read (``CorruptPolicy.action == "drop"``)."""

    index: int
    path: str
    reason: str


class CorruptCounter:
    """Counts reads and distinct corrupt rows in shared memory, so DataLoader workers add to one total."""

    def __init__(self, num_rows: int) -> None:
        self.num_rows = num_rows
        self._create(np.zeros(max(num_rows, 1), dtype=np.int8), 0, 0, 0)

    def _create(self, flags: np.ndarray, distinct: int, corrupt_reads: int, reads: int) -> None:
        # A lock made by a fork context cannot be handed to spawned workers; one made by the spawn
        # context works with fork, forkserver and spawn workers alike. Shared arrays work with all three.
        context = multiprocessing.get_context("spawn")
        self._lock = context.Lock()
        self._flags = context.RawArray("b", flags.tobytes())
        self._values = context.RawArray("q", [distinct, corrupt_reads, reads])

    def record_read(self) -> None:
        with self._lock:
            self._values[2] += 1

    def record_corrupt(self, position: int) -> tuple[int, int, int]:
        """Count one corrupt read of row ``position``; returns (distinct corrupt, corrupt reads, reads)."""
        with self._lock:
            if not self._flags[position]:
                self._flags[position] = 1
                self._values[0] += 1
            self._values[1] += 1
            self._values[2] += 1
            return self._values[0], self._values[1], self._values[2]

    @property
    def distinct(self) -> int:
        return int(self._values[0])

    def positions(self) -> np.ndarray:
        """Positions of the distinct rows found corrupt so far, by any worker, in order."""
        return np.flatnonzero(np.frombuffer(self._flags, dtype=np.int8)[: self.num_rows])

    @property
    def reads(self) -> int:
        return int(self._values[2])

    def __getstate__(self) -> dict[str, Any]:
        from multiprocessing.context import get_spawning_popen

        if get_spawning_popen() is not None:  # handing the shared memory to a new worker process
            return dict(self.__dict__)
        # A plain copy (pickle, deepcopy): snapshot the counts into fresh shared memory.
        return {
            "num_rows": self.num_rows,
            "snapshot": (np.frombuffer(self._flags, dtype=np.int8).copy(), *list(self._values)),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "snapshot" in state:
            self.num_rows = state["num_rows"]
            self._create(*state["snapshot"])
        else:
            self.__dict__.update(state)


class _PathTable:
    """Paths as one UTF-8 buffer plus offsets: no per-row Python objects for worker processes to copy."""

    def __init__(self, paths: Sequence[str]) -> None:
        encoded = [p.encode("utf-8") for p in paths]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self._offsets[1:])
        self._buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, position: int) -> str:
        start, end = self._offsets[position], self._offsets[position + 1]
        return self._buffer[start:end].tobytes().decode("utf-8")


class ManifestDataset(Dataset):
    """Images of a manifest table, ready for a model.

    Args:
        df: manifest rows (e.g. from :func:`~mfclip.data.manifest.load_manifest` and
            :meth:`mfclip.engine.protocol.RowSelector.select`); its index is reported as ``index``.
        root: directory the manifest paths are relative to.
        image_size: the model's input size ``S``.
        transform: resize and augmentation settings (augmentation runs only when ``train``), or a
            built :class:`~mfclip.data.transforms.ImageTransform` of size ``S`` used as it is (e.g. the
            model's own, :meth:`ImageTransform.for_model`).
        prompt_set: prompt set name or path; prompt tokens of every row are computed once, here.
        train: enable augmentation (drawn from a generator seeded per DataLoader worker).
        max_pixels: refuse images with more pixels than this (decompression bombs).
        corrupt_policy: what to do with unreadable files (default: replace when training, drop otherwise).
        seed: seed of the augmentation generator in the main process (workers derive theirs from
            the DataLoader's per-worker seed, so runs repeat under ``torch.manual_seed``).
    """

    def __init__(
        self,
        df: pd.DataFrame,
        root: str | Path,
        image_size: int,
        transform: TransformConfig | ImageTransform | None = None,
        prompt_set: str = "default",
        train: bool = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        corrupt_policy: CorruptPolicy | None = None,
        seed: int = 0,
    ) -> None:
        missing = [c for c in REQUIRED_COLUMNS if c not in df.columns and c != "split"]
        if missing:
            raise ManifestError(f"manifest table lacks column(s) {', '.join(missing)}")
        if len(df) == 0:
            raise ManifestError("manifest table has no rows")
        self.root = Path(root)
        if not self.root.is_dir():
            raise ManifestError(f"dataset root {self.root} is not a directory")
        paths = df["path"].map(cell_text).tolist()
        rows = np.asarray(df.index, dtype=np.int64)
        self._check_rows(df, paths, rows)
        self.labels = label_values(df["label"]).to_numpy(dtype=np.int64)
        self.indices = rows
        self.generators = (
            df["generator"].map(cell_text).to_numpy(dtype=object)
            if "generator" in df
            else np.full(len(df), "")
        )
        self._paths = _PathTable(paths)
        self.prompts = build_prompt_table(
            self.labels,
            **{name: df.get(name) for name in PROMPT_COLUMNS},
            prompt_set=prompt_set,
        )
        if isinstance(transform, ImageTransform):
            if transform.image_size != int(image_size):
                raise ValueError(
                    f"the transform makes {transform.image_size} px images, the dataset {image_size} px"
                )
            self.transform = transform
        else:
            self.transform = ImageTransform(image_size, transform, train)
        self.image_size = int(image_size)
        self.train = train
        self.max_pixels = max_pixels
        self.corrupt_policy = corrupt_policy or CorruptPolicy(action="replace" if train else "drop")
        self.corrupt = CorruptCounter(len(df))
        self.seed = int(seed)
        self._rng: np.random.Generator | None = None
        self._rng_owner: tuple[int, int] | None = None
        self._recent_corrupt: deque[str] = deque(maxlen=5)

    @staticmethod
    def _check_rows(df: pd.DataFrame, paths: list[str], rows: np.ndarray) -> None:
        for row, path in zip(rows, paths, strict=True):
            problem = path_problem(path)
            if problem:
                raise ManifestError(f"row {spreadsheet_row(row)}, column 'path': {problem}")
        labels = label_values(df["label"])
        if labels.isna().any():
            bad = int(np.flatnonzero(labels.isna().to_numpy())[0])
            value = df["label"].iloc[bad]
            raise ManifestError(
                f"row {spreadsheet_row(rows[bad])}, column 'label': must be 0 or 1, got {value!r}"
            )
        videos = [i for i, p in enumerate(paths) if is_video_path(p)]
        if videos:
            first = videos[0]
            example = f"row {spreadsheet_row(rows[first])}: {paths[first]}"
            raise ManifestError(
                f"{len(videos)} manifest row(s) are videos (e.g. {example}); "
                "turn videos into face crops with face preprocessing first"
            )

    def __len__(self) -> int:
        return len(self._paths)

    def path(self, position: int) -> str:
        """The manifest path of the row at ``position`` (0-based)."""
        return self._paths[position]

    def corrupt_files(self) -> list[dict[str, Any]]:
        """Every distinct row whose file could not be read so far (by any DataLoader worker), once each:
        its manifest ``index``, ``path`` and the ``reason`` (the file is decoded again to say why)."""
        listed = []
        for position in self.corrupt.positions().tolist():
            path = self._paths[position]
            try:
                load_image(self.root / path, max_pixels=self.max_pixels, name=path)
                reason = "could not be read during the run (reads now)"
            except ImageDecodeError as exc:
                reason = exc.reason
            listed.append({"index": int(self.indices[position]), "path": path, "reason": reason})
        return listed

    def _generator(self) -> np.random.Generator:
        """The augmentation generator of this process (a hook: subclasses may key it per item)."""
        info = torch.utils.data.get_worker_info()
        owner = (os.getpid(), info.id if info is not None else -1)
        if self._rng is None or self._rng_owner != owner:
            entropy = [self.seed] if info is None else [self.seed, int(info.seed) % (2**63), info.id]
            self._rng = np.random.default_rng(np.random.SeedSequence(entropy))
            self._rng_owner = owner
        return self._rng

    def __getitem__(self, position: int) -> dict[str, Any] | DroppedSample:
        n = len(self)
        policy = self.corrupt_policy
        tries = policy.max_replacement_tries if policy.action == "replace" else 1
        for attempt in range(tries):
            current = (int(position) + attempt) % n
            path = self._paths[current]
            try:
                image = load_image(
                    self.root / path,
                    max_pixels=self.max_pixels,
                    name=path,
                    draft_size=self.transform.draft_size,
                )
            except ImageDecodeError as exc:
                self._on_corrupt(current, path, exc.reason)
                if policy.action == "drop":
                    return DroppedSample(int(self.indices[current]), path, exc.reason)
                continue
            self.corrupt.record_read()
            rng = self._generator() if self.transform.augments else None
            tokens, mask = self.prompts.rows([current])
            return {
                "image": self.transform(image, rng),
                "label": int(self.labels[current]),
                "prompt_tokens": tokens[0],
                "prompt_mask": mask[0],
                "index": int(self.indices[current]),
                "path": path,
            }
        raise TooManyCorruptFiles(
            f"{tries} consecutive files starting at {self._paths[int(position) % n]} could not be read "
            f"(last: {'; '.join(self._recent_corrupt)})"
        )

    def _on_corrupt(self, position: int, path: str, reason: str) -> None:
        distinct, corrupt_reads, reads = self.corrupt.record_corrupt(position)
        self._recent_corrupt.append(f"{path}: {reason}")
        logger.warning("skipping unreadable file %s: %s", self.root / path, reason)
        policy = self.corrupt_policy
        problem = None
        if policy.action == "raise":
            problem = "corrupt_policy.action is 'raise'"
        elif policy.max_corrupt is not None and distinct > policy.max_corrupt:
            problem = f"{distinct} distinct corrupt files, above max_corrupt={policy.max_corrupt}"
        elif policy.max_corrupt_fraction is not None:
            fraction = policy.max_corrupt_fraction
            if len(self) >= policy.min_reads_for_fraction and distinct > fraction * len(self):
                problem = (
                    f"{distinct} of {len(self)} files are corrupt, above max_corrupt_fraction={fraction:g}"
                )
            elif reads >= policy.min_reads_for_fraction and corrupt_reads > fraction * reads:
                problem = (
                    f"{corrupt_reads} of the {reads} files read so far were corrupt, "
                    f"above max_corrupt_fraction={fraction:g}"
                )
        if problem:
            last = "\n  ".join(self._recent_corrupt)
            raise TooManyCorruptFiles(
                f"too many unreadable images under {self.root}: {problem}; last:\n  {last}"
            )


def collate_batch(samples: Sequence[dict[str, Any] | DroppedSample]) -> dict[str, Any] | None:
    """Stack items into a batch dict; dropped samples are left out and listed under ``skipped``.

    Keys: ``image`` (B, 3, S, S) float32, ``label`` (B,) int64, ``prompt_tokens`` (B, 4, 77) int64,
    ``prompt_mask`` (B, 4) bool, ``index`` (B,) int64, ``path`` list of B str, ``skipped`` list of
    (index, path, reason) of the dropped samples. Returns None when every sample was dropped.
    """
    kept = [s for s in samples if not isinstance(s, DroppedSample)]
    skipped = [(s.index, s.path, s.reason) for s in samples if isinstance(s, DroppedSample)]
    if not kept:
        return None
    return {
        "image": torch.stack([s["image"] for s in kept]),
        "label": torch.tensor([s["label"] for s in kept], dtype=torch.int64),
        "prompt_tokens": torch.stack([s["prompt_tokens"] for s in kept]),
        "prompt_mask": torch.stack([s["prompt_mask"] for s in kept]),
        "index": torch.tensor([s["index"] for s in kept], dtype=torch.int64),
        "path": [s["path"] for s in kept],
        "skipped": skipped,
    }
