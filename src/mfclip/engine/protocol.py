"""Evaluation protocols as data: which manifest rows train, which select the checkpoint, which are tests.

A protocol YAML (``configs/protocols/*.yaml``) looks like::

    name: diff-cross-forgery
    manifests: {diff: diff.csv}          # or the shorthand `manifest: diff.csv`
    train: {split: train, generators: [Midjourney, SDXL, FreeDoM_T, HPS]}
    val:   {split: val,   generators: [Midjourney, SDXL, FreeDoM_T, HPS]}
    test:
      t2i: {split: test, generators: [Midjourney, SDXL, FreeDoM_T, HPS]}
      fs:  {split: test, generators: [DiffFace, DCFace]}
    variants:                            # optional: several trainings in one protocol
      t2i: {}
      fs: {train: {split: train, generators: [DiffFace, DCFace]}, val: {...}}
    robustness:                          # optional: every test set re-scored under each perturbation
      - {name: jpeg75, kind: jpeg, quality: 75}

Manifest paths are relative to a data directory given at run time (default: the protocol file's folder).
Checkpoints are selected on ``val`` only, which must be source-domain data and never overlap a test set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field, field_validator, model_validator

from mfclip.utils.config import ConfigError, StrictConfig, deep_merge, load_yaml

PROTOCOL_DIR = Path(__file__).resolve().parent.parent / "configs" / "protocols"
SPLITS = ("train", "val", "test")


def _as_list(value: str | list[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


class RowSelector(StrictConfig):
    """Which rows of a manifest form one set. Empty filters select everything.

    Label filters (datasets, forgery types, families, generators) apply to the fakes; reals of the
    selected splits (and ``real_datasets``, default: the same datasets) are added when ``include_real``.
    """

    manifest: str = "default"
    split: list[str] | None = None
    datasets: list[str] | None = None
    forgery_types: list[str] | None = None
    families: list[str] | None = None
    generators: list[str] | None = None
    exclude_generators: list[str] | None = None
    include_real: bool = True
    include_fake: bool = True
    real_datasets: list[str] | None = None

    @field_validator(
        "split",
        "datasets",
        "forgery_types",
        "families",
        "generators",
        "exclude_generators",
        "real_datasets",
        mode="before",
    )
    @classmethod
    def _listify(cls, value: str | list[str] | None) -> list[str] | None:
        return _as_list(value)

    @field_validator("split")
    @classmethod
    def _known_splits(cls, value: list[str] | None) -> list[str] | None:
        for split in value or []:
            if split not in SPLITS:
                raise ValueError(f"unknown split {split!r}; valid: {list(SPLITS)}")
        return value

    def select(self, df: pd.DataFrame) -> pd.DataFrame:
        """The selected rows of ``df`` (a manifest), in manifest order."""
        base = pd.Series(True, index=df.index)
        if self.split is not None:
            base &= df["split"].astype(str).isin(self.split)
        labels = df["label"].astype(int)
        fake = base & (labels == 1)
        if self.datasets is not None:
            fake &= df["dataset"].astype(str).isin(self.datasets)
        if self.forgery_types is not None:
            fake &= df["forgery_type"].astype(str).isin(self.forgery_types)
        if self.families is not None:
            fake &= df["family"].astype(str).isin(self.families)
        if self.generators is not None:
            fake &= df["generator"].astype(str).isin(self.generators)
        if self.exclude_generators is not None:
            fake &= ~df["generator"].astype(str).isin(self.exclude_generators)
        real = base & (labels == 0)
        real_datasets = self.real_datasets if self.real_datasets is not None else self.datasets
        if real_datasets is not None:
            real &= df["dataset"].astype(str).isin(real_datasets)
        mask = (fake & self.include_fake) | (real & self.include_real)
        return df[mask]


class Perturbation(StrictConfig):
    """A deterministic image degradation for robustness tests (applied to 8-bit RGB images)."""

    name: str
    kind: Literal["jpeg", "downscale", "blur", "noise"]
    quality: int | None = Field(default=None, ge=1, le=100)  # jpeg
    factor: float | None = Field(default=None, gt=0, le=1)  # downscale: resize by factor, then back
    sigma: float | None = Field(default=None, gt=0)  # blur (pixels) / noise (on 0–255)

    @model_validator(mode="after")
    def _parameters_present(self) -> Perturbation:
        needed = {"jpeg": "quality", "downscale": "factor", "blur": "sigma", "noise": "sigma"}[self.kind]
        if getattr(self, needed) is None:
            raise ValueError(f"perturbation {self.name!r} of kind {self.kind!r} needs {needed!r}")
        return self


class Protocol(StrictConfig):
    """A named protocol: training rows, source-domain validation rows, test sets, optional variants."""

    name: str
    description: str = ""
    synthetic: bool = False
    manifests: dict[str, str] = Field(default_factory=dict)
    train: RowSelector | None = None
    val: RowSelector | None = None
    test: dict[str, RowSelector] = Field(default_factory=dict)
    variants: dict[str, dict] = Field(default_factory=dict)
    robustness: list[Perturbation] = Field(default_factory=list)
    levels: list[int] | None = None
    source: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> Protocol:
        names = set(self.manifests) or {"default"}
        selectors = [("train", self.train), ("val", self.val)] + [
            (f"test.{k}", v) for k, v in self.test.items()
        ]
        for label, selector in selectors:
            if selector is not None and selector.manifest not in names:
                raise ValueError(
                    f"{label}.manifest {selector.manifest!r} is not one of the protocol's manifests "
                    f"{sorted(names)}"
                )
        if self.val is not None and self.val.split and "test" in self.val.split:
            raise ValueError(
                "val must not select the test split: checkpoints are chosen on source-domain val"
            )
        return self

    def variant(self, name: str | None) -> Protocol:
        """This protocol with a variant's train/val/test overrides applied (``None``: as written)."""
        if name is None:
            return self
        if name not in self.variants:
            valid = sorted(self.variants)
            raise ConfigError(f"protocol {self.name!r} has no variant {name!r}; variants: {valid}")
        data = deep_merge(self.model_dump(exclude={"variants"}), self.variants[name])
        data["name"] = f"{self.name}-{name}"
        result = Protocol.from_dict(data, source=f"{self.source or self.name} variant {name}")
        result.source = self.source
        return result

    def variant_names(self) -> list[str | None]:
        return list(self.variants) if self.variants else [None]

    def manifest_path(self, key: str, data_dir: str | Path | None = None) -> Path:
        """Resolve a manifest name to a path, relative to ``data_dir`` or the protocol file's folder."""
        if key not in (self.manifests or {"default": ""}):
            raise ConfigError(f"protocol {self.name!r} names no manifest {key!r}")
        if not self.manifests:
            raise ConfigError(f"protocol {self.name!r} names no manifest; pass one with --manifest")
        relative = Path(self.manifests[key])
        if relative.is_absolute():
            return relative
        if data_dir is None:
            data_dir = Path(self.source).parent if self.source else Path.cwd()
            path = Path(data_dir) / relative
            if self.is_bundled and not path.exists():
                # The bundled protocols ship without data: the manifest lives wherever the user put it.
                raise ConfigError(
                    f"protocol {Path(str(self.source)).stem!r} needs --data-dir DIR (the folder holding "
                    f"{relative})"
                )
            return path
        return Path(data_dir) / relative

    @property
    def is_bundled(self) -> bool:
        """Whether this protocol is one of mfclip's own (``configs/protocols/``)."""
        return self.source is not None and Path(self.source).resolve().parent == PROTOCOL_DIR


def list_protocols() -> list[str]:
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.yaml"))


def load_protocol(name_or_path: str | Path) -> Protocol:
    """Load a protocol YAML by path, or a bundled protocol by name."""
    path = Path(name_or_path)
    if not path.is_file():
        bundled = PROTOCOL_DIR / f"{name_or_path}.yaml"
        if not bundled.is_file():
            bundled_names = list_protocols()
            raise ConfigError(f"protocol {str(name_or_path)!r} not found; bundled protocols: {bundled_names}")
        path = bundled
    data = load_yaml(path)
    if "manifest" in data:
        if "manifests" in data:
            raise ConfigError(f"{path}: give either 'manifest' or 'manifests', not both")
        data["manifests"] = {"default": data.pop("manifest")}
    protocol = Protocol.from_dict(data, source=str(path))
    protocol.source = str(path)
    return protocol
