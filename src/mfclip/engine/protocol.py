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

from mfclip.data.manifest import select_rows
from mfclip.schema import SPLITS
from mfclip.utils.config import ConfigError, StrictConfig, deep_merge, load_yaml

PROTOCOL_DIR = Path(__file__).resolve().parent.parent / "configs" / "protocols"


def _as_list(value: str | list[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


#: How :func:`~mfclip.data.manifest.select_rows` names the selector's fields in its errors.
SELECTOR_FIELDS = {
    "dataset": "datasets",
    "forgery_type": "forgery_types",
    "family": "families",
    "generator": "generators",
    "exclude_generator": "exclude_generators",
    "real_dataset": "real_datasets",
}


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

    def select(self, df: pd.DataFrame, key: str | None = None, where: str | None = None) -> pd.DataFrame:
        """The selected rows of ``df`` (a manifest), in manifest order, by
        :func:`~mfclip.data.manifest.select_rows`: strict about every name it lists.

        A name missing from the rows it filters, or an empty selection, raises
        :class:`~mfclip.data.manifest.ManifestError` naming ``{where}: {key}.{filter}`` (e.g.
        ``protocol 'toy': test.unseen.generators``), the missing names and those present.
        """
        return select_rows(
            df,
            split=self.split,
            dataset=self.datasets,
            forgery_type=self.forgery_types,
            family=self.families,
            generator=self.generators,
            exclude_generator=self.exclude_generators,
            include_real=self.include_real,
            include_fake=self.include_fake,
            real_dataset=self.real_datasets,
            key=key,
            context=where,
            field_names=SELECTOR_FIELDS,
        )

    def describe(self) -> str:
        """The filters that are set, as ``split=['test'], generators=['SDXL']``."""
        parts = [
            f"{field}={value}"
            for field, value in self.to_dict().items()
            if value not in (None, [], True, "default")
        ]
        return ", ".join(parts) or "all rows"


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

    def select(self, part: str, df: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``df`` that ``part`` selects: ``"train"``, ``"val"`` or ``"test.<name>"``
        (see :meth:`RowSelector.select`; errors name the protocol and the key)."""
        selector = {"train": self.train, "val": self.val}.get(part)
        if part.startswith("test."):
            selector = self.test.get(part.removeprefix("test."))
        if selector is None:
            raise ConfigError(f"protocol {self.name!r} has no {part!r} selector")
        return selector.select(df, key=part, where=f"protocol {self.name!r}")

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
