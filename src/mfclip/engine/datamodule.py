"""Training and validation data for Lightning: rows from a protocol or a manifest, resumable sampling.

Rows: a protocol's ``train``/``val`` selectors (optionally one of its variants), or a manifest's ``split``
column. Validation rows select the checkpoint, so they must be source-domain data: a protocol's ``val``
never selects the test split, and train and val rows must not share a file.

Sampling is a pure function of ``(seed, epoch)``: each epoch draws an order of the training rows (a
permutation, or class-balanced draws with replacement), every process of a data-parallel run takes its
interleaved share, and each drawn sample carries its own augmentation seed ``(seed, epoch, draw)``. So a run
resumed mid-epoch continues with exactly the batches and augmentations the uninterrupted run would have
seen, and N processes with batch B see the same samples as one process with batch N·B.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Sampler

from mfclip.data.dataset import CorruptPolicy, ManifestDataset, collate_batch
from mfclip.data.manifest import load_manifest
from mfclip.data.sampling import balanced_weights
from mfclip.data.transforms import ImageTransform
from mfclip.engine.config import DataSection
from mfclip.engine.protocol import Protocol, RowSelector, load_protocol
from mfclip.inputs import FaceCropConfig, InputConfig
from mfclip.utils.config import ConfigError

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------
# Which rows
# ---------------------------------------------------------------------------------------------------


@dataclass
class TrainingRows:
    """The resolved training and validation rows and where they came from."""

    train: pd.DataFrame
    val: pd.DataFrame
    train_root: Path
    val_root: Path
    train_manifest: Path
    val_manifest: Path
    protocol: Protocol | None = None
    variant: str | None = None
    synthetic: bool = False
    datasets: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for the run directory and the model card."""

        def counts(df: pd.DataFrame) -> dict[str, int]:
            labels = df["label"].astype(int)
            return {"rows": len(df), "real": int((labels == 0).sum()), "fake": int((labels == 1).sum())}

        return {
            "train_manifest": str(self.train_manifest),
            "val_manifest": str(self.val_manifest),
            "train_root": str(self.train_root),
            "val_root": str(self.val_root),
            "protocol": self.protocol.name if self.protocol is not None else None,
            "protocol_source": self.protocol.source if self.protocol is not None else None,
            "variant": self.variant,
            "synthetic": self.synthetic,
            "datasets": self.datasets,
            "train": counts(self.train),
            "val": counts(self.val),
        }


def resolve_protocol(data: DataSection) -> Protocol | None:
    """The protocol of ``data`` (None without one), with ``data.variant`` applied."""
    if data.protocol is None:
        return None
    return load_protocol(data.protocol).variant(data.variant)


def resolve_rows(data: DataSection) -> TrainingRows:
    """Load the manifest(s) and select the training and validation rows ``data`` describes."""
    protocol = resolve_protocol(data)
    if protocol is None:
        if data.manifest is None:
            raise ConfigError(
                "no training data: set data.protocol or data.manifest (--protocol / --manifest)"
            )
        manifest = Path(data.manifest)
        df = _load(manifest, data)
        where = f"manifest {manifest}"
        train = RowSelector(split=["train"]).select(df, where=where)
        val = RowSelector(split=["val"]).select(df, where=where)
        root = _root(manifest, data)
        rows = TrainingRows(train, val, root, root, manifest, manifest)
    else:
        if protocol.train is None or protocol.val is None:
            missing = "train" if protocol.train is None else "val"
            raise ConfigError(f"protocol {protocol.name!r} has no {missing!r} selector: it cannot train")
        paths = _protocol_manifests(protocol, data)
        loaded: dict[str, pd.DataFrame] = {}
        for key in {protocol.train.manifest, protocol.val.manifest}:
            loaded[key] = _load(paths[key], data)
        train = protocol.select("train", loaded[protocol.train.manifest])
        val = protocol.select("val", loaded[protocol.val.manifest])
        train_path, val_path = paths[protocol.train.manifest], paths[protocol.val.manifest]
        rows = TrainingRows(
            train,
            val,
            _root(train_path, data),
            _root(val_path, data),
            train_path,
            val_path,
            protocol=protocol,
            variant=data.variant,
        )
        where = f"protocol {protocol.name!r}"
    _check_rows(rows, where)
    datasets = sorted({str(d) for d in rows.train.get("dataset", pd.Series(dtype=str)) if str(d)})
    rows.datasets = datasets
    if data.synthetic is not None:
        rows.synthetic = data.synthetic
    else:
        rows.synthetic = bool(protocol is not None and protocol.synthetic) or any(
            "synth" in d.lower() for d in datasets
        )
    return rows


def _protocol_manifests(protocol: Protocol, data: DataSection) -> dict[str, Path]:
    keys = list(protocol.manifests) or ["default"]
    if data.manifest is not None:
        if len(keys) > 1:
            raise ConfigError(
                f"protocol {protocol.name!r} names several manifests ({', '.join(keys)}); "
                "data.manifest can replace only a protocol's single manifest"
            )
        return {keys[0]: Path(data.manifest)}
    return {key: protocol.manifest_path(key, data.data_dir) for key in keys}


def _load(path: Path, data: DataSection) -> pd.DataFrame:
    return load_manifest(
        path,
        data.root,
        drop_invalid=data.drop_invalid,
        check_files=data.check_files,
        prompt_set=data.prompt_set,
    )


def _root(manifest: Path, data: DataSection) -> Path:
    return Path(data.root) if data.root is not None else manifest.parent


def _check_rows(rows: TrainingRows, where: str) -> None:
    for name, df in (("train", rows.train), ("val", rows.val)):
        if len(df) == 0:
            raise ConfigError(f"{where}: selects no {name} rows")
        labels = set(df["label"].astype(int))
        if labels != {0, 1}:
            present = "real" if labels == {0} else "fake"
            raise ConfigError(
                f"{where}: the {name} rows are all {present}; training and checkpoint selection need both "
                "real and fake faces"
            )
    if rows.train_manifest == rows.val_manifest and rows.train_root == rows.val_root:
        shared = set(rows.train["path"].astype(str)) & set(rows.val["path"].astype(str))
        if shared:
            example = sorted(shared)[0]
            raise ConfigError(
                f"{where}: {len(shared)} file(s) are in both the train and the val rows (e.g. {example}); "
                "validation must be held out"
            )


# ---------------------------------------------------------------------------------------------------
# The input contract
# ---------------------------------------------------------------------------------------------------


def resolve_input_contract(data: DataSection, rows: TrainingRows, preset: InputConfig) -> InputConfig:
    """The input contract a model trained on ``rows`` records: ``data``'s settings over the preset's.

    See :class:`~mfclip.engine.config.DataSection` for ``resize``, ``interpolation`` and ``face_crop``.
    """
    if isinstance(data.face_crop, FaceCropConfig):
        face: FaceCropConfig | None = data.face_crop
    elif data.face_crop == "off":
        face = None
    else:
        face = recorded_face_crop(rows.train_manifest.parent, rows.train_root) or preset.face
        val_crop = recorded_face_crop(rows.val_manifest.parent, rows.val_root)
        if val_crop is not None and face is not None and val_crop != face:
            logger.warning(
                "the validation crops (%s) were cut unlike the training crops (%s)",
                val_crop.describe(),
                face.describe(),
            )
    return InputConfig(
        resize=data.resize or preset.resize,
        interpolation=data.interpolation or preset.interpolation,
        face=face,
    )


def recorded_face_crop(*folders: Path) -> FaceCropConfig | None:
    """The crop settings ``mfclip preprocess`` recorded in the first of ``folders`` that has them."""
    from mfclip.face.pipeline import crop_settings_of

    for folder in dict.fromkeys(folders):
        found = crop_settings_of(folder)
        if found is not None:
            return found
    return None


# ---------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------


@dataclass
class SamplingPosition:
    """Where training is in the data: the epoch whose order is being drawn and the batches done in it."""

    epoch: int = 0
    batches_done: int = 0


def sample_seed(seed: int, epoch: int, draw: int) -> list[int]:
    """Entropy of the augmentation generator of the ``draw``-th sample of ``epoch``."""
    return [seed % 2**63, epoch, draw]


class EpochSampler(Sampler[tuple[int, int, int, int]]):
    """This process's share of each epoch's order, starting where :class:`SamplingPosition` says.

    Yields ``(row position, seed, epoch, draw)`` keys for :class:`SeededManifestDataset`. Every process gets
    the same number of samples (the tail of the order that does not divide evenly is left out).
    """

    def __init__(
        self,
        num_rows: int,
        batch_size: int,
        seed: int,
        position: SamplingPosition,
        weights: np.ndarray | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"invalid rank {rank} for world size {world_size}")
        self.num_rows = num_rows
        self.batch_size = batch_size
        self.seed = int(seed)
        self.position = position
        self.weights = weights
        self.rank = rank
        self.world_size = world_size
        self.per_rank = num_rows // world_size
        if self.per_rank < batch_size:
            raise ConfigError(
                f"the training set has {num_rows} rows: fewer than one batch of {batch_size} for each of "
                f"{world_size} process(es); lower data.batch_size"
            )

    def order(self, epoch: int) -> np.ndarray:
        """Row positions of ``epoch`` in draw order (all processes)."""
        rng = np.random.default_rng([self.seed % 2**63, epoch, 0x5A3])
        if self.weights is None:
            return rng.permutation(self.num_rows)
        return rng.choice(self.num_rows, size=self.num_rows, replace=True, p=self.weights)

    def __iter__(self) -> Iterator[tuple[int, int, int, int]]:
        epoch = self.position.epoch
        order = self.order(epoch)
        draws = np.arange(self.rank, self.per_rank * self.world_size, self.world_size)
        start = self.position.batches_done * self.batch_size
        for draw in draws[start:]:
            yield int(order[draw]), self.seed, epoch, int(draw)

    def __len__(self) -> int:
        return self.per_rank


class ShardSampler(Sampler[int]):
    """Rows ``rank, rank + world_size, ...`` in order: each validation row is scored by one process."""

    def __init__(self, num_rows: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, num_rows, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class SeededManifestDataset(ManifestDataset):
    """A :class:`ManifestDataset` whose items may be keyed ``(position, seed, epoch, draw)``.

    A keyed item is augmented with a generator seeded from its key, so its pixels depend only on the key,
    not on the process or DataLoader worker that loads it, nor on what was loaded before.
    """

    _item_rng: np.random.Generator | None = None

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, tuple):
            position, seed, epoch, draw = key
            self._item_rng = np.random.default_rng(sample_seed(seed, epoch, draw))
            try:
                return super().__getitem__(position)
            finally:
                self._item_rng = None
        return super().__getitem__(key)

    def _generator(self) -> np.random.Generator:
        if self._item_rng is not None:
            return self._item_rng
        return super()._generator()


# ---------------------------------------------------------------------------------------------------
# The data module
# ---------------------------------------------------------------------------------------------------


class DetectorDataModule(L.LightningDataModule):
    """Loaders of the training and validation rows for ``model``, transformed by its input contract."""

    def __init__(
        self,
        data: DataSection,
        model: Any,
        seed: int = 0,
        rows: TrainingRows | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.data = data
        self.train_transform = ImageTransform.for_model(model, train=True, augment=data.augment)
        self.val_transform = ImageTransform.for_model(model)
        self.image_size = self.val_transform.image_size
        self.seed = int(seed)
        self.rows = rows
        self.pin_memory = pin_memory
        self.position = SamplingPosition()
        self.train_set: SeededManifestDataset | None = None
        self.val_set: SeededManifestDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.rows is None:
            self.rows = resolve_rows(self.data)
        if self.train_set is not None:
            return
        data, rows = self.data, self.rows
        limits = {"max_corrupt": data.max_corrupt, "max_corrupt_fraction": data.max_corrupt_fraction}
        self.train_set = SeededManifestDataset(
            rows.train,
            rows.train_root,
            self.image_size,
            transform=self.train_transform,
            prompt_set=data.prompt_set,
            train=True,
            corrupt_policy=CorruptPolicy(action="replace", **limits),
            seed=self.seed,
        )
        self.val_set = SeededManifestDataset(
            rows.val,
            rows.val_root,
            self.image_size,
            transform=self.val_transform,
            prompt_set=data.prompt_set,
            train=False,
            corrupt_policy=CorruptPolicy(action="drop", **limits),
            seed=self.seed,
        )

    def corrupt_files(self) -> dict[str, list[dict[str, Any]]]:
        """The files of the ``train`` and ``val`` rows that could not be read so far, each listed once
        (see :meth:`~mfclip.data.dataset.ManifestDataset.corrupt_files`); this process's reads only."""
        sets = (("train", self.train_set), ("val", self.val_set))
        return {name: dataset.corrupt_files() for name, dataset in sets if dataset is not None}

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _loader(self, dataset: Any, sampler: Sampler, batch_size: int, drop_last: bool) -> DataLoader:
        workers = self.data.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=workers,
            collate_fn=collate_batch,
            pin_memory=self.pin_memory,
            persistent_workers=workers > 0,
            # Worker base seeds come from this generator, never from the global RNG that the model uses.
            generator=torch.Generator().manual_seed(self.seed % 2**63),
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        rank, world = self._world()
        weights = None
        if self.data.sampling != "shuffle":
            groups = self.train_set.generators if self.data.sampling == "balanced_generators" else None
            weights = balanced_weights(self.train_set.labels, groups)
        sampler = EpochSampler(
            len(self.train_set),
            self.data.batch_size,
            self.seed,
            self.position,
            weights=weights,
            rank=rank,
            world_size=world,
        )
        return self._loader(self.train_set, sampler, self.data.batch_size, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "call setup() first"
        rank, world = self._world()
        sampler = ShardSampler(len(self.val_set), rank, world)
        return self._loader(self.val_set, sampler, self.data.val_batch_size, drop_last=False)
