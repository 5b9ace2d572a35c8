"""The fine-grained text generator (FTG): labels → four hierarchical prompts → CLIP tokens.

Prompt sets are data (``configs/prompts/*.yaml``). Levels:
1 authenticity, 2 forgery type, 3 generator family, 4 generator. A real image reads the real prompt at
every level. A fake image whose label for a level is unknown gets, in that slot, the prompt of the level
the set's ``fallback`` section names and ``False`` in the level mask, so only the levels it has are used.
A dataset listed in the set's ``dataset_levels`` supplies only the levels named there: the others are
unknown for every row of it (FF++ trains with levels 1 and 2 only). A forgery type or family that is
neither a canonical name nor an alias warns once and counts as unknown. Generator names match the set's
generator table and aliases ignoring case. :func:`build_prompt_table` tokenizes the prompts of many rows.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch
from pydantic import Field, PrivateAttr, model_validator

from mfclip.prompts.table import PromptTable, build_prompt_table
from mfclip.utils.config import ConfigError, StrictConfig, load_yaml

__all__ = [
    "CONTEXT_LENGTH",
    "DEFAULT_FALLBACK",
    "END_OF_TEXT",
    "FAMILIES",
    "FORGERY_TYPES",
    "LEVEL_NAMES",
    "NUM_LEVELS",
    "VOCAB_SIZE",
    "GeneratorInfo",
    "PromptLevels",
    "PromptSet",
    "PromptTable",
    "build_prompt_table",
    "list_prompt_sets",
    "load_prompt_set",
    "tokenize",
]

NUM_LEVELS = 4
LEVEL_NAMES = ("authenticity", "forgery_type", "family", "generator")
CONTEXT_LENGTH = 77
VOCAB_SIZE = 49408
END_OF_TEXT = VOCAB_SIZE - 1  # the end-of-text token id, the largest in the vocabulary
FORGERY_TYPES = ("entire_synthesis", "face_swap", "attribute_manipulation")
FAMILIES = ("diffusion", "gan")

_PROMPT_DIR = Path(__file__).resolve().parent.parent / "configs" / "prompts"


class PromptLevels(StrictConfig):
    authenticity: str
    forgery_type: dict[str, str]
    family: dict[str, str]
    generator: str


class GeneratorInfo(StrictConfig):
    forgery_type: str | None = None
    family: str | None = None


# Each level falls back to the one before it unless a prompt set says otherwise.
DEFAULT_FALLBACK = {"forgery_type": "authenticity", "family": "forgery_type", "generator": "family"}
ALL_LEVELS_KNOWN = (True,) * NUM_LEVELS


class PromptSet(StrictConfig):
    """A prompt set: the real prompt, the fake prompts per level, fallbacks, aliases, the generator table.

    ``fallback`` maps each of the levels after authenticity to an earlier level whose prompt a fake
    image reads when its own label for that level is unknown (default: the level just before it).
    ``unknown_values`` are the spellings (compared case-insensitively) that mean "not known", like an
    empty cell. ``dataset_levels`` maps a dataset name (the manifest's ``dataset`` column, compared
    case-insensitively) to the levels that dataset can supply; a dataset not listed supplies all four.
    Generator names are looked up in ``generators`` (and ``aliases.generator``) ignoring case.
    """

    name: str
    real: str
    levels: PromptLevels
    fallback: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_FALLBACK))
    unknown_values: list[str] = Field(default_factory=list)
    aliases: dict[str, dict[str, str]] = Field(default_factory=dict)
    generators: dict[str, GeneratorInfo] = Field(default_factory=dict)
    dataset_levels: dict[str, list[str]] = Field(default_factory=dict)
    _warned: set[tuple[str, str]] = PrivateAttr(default_factory=set)
    _generator_names: dict[str, str] = PrivateAttr(default_factory=dict)
    _aliases_by_case: dict[str, dict[str, str]] = PrivateAttr(default_factory=dict)
    _dataset_masks: dict[str, tuple[bool, ...]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _fallbacks_point_back(self) -> PromptSet:
        expected = set(LEVEL_NAMES[1:])
        if set(self.fallback) != expected:
            raise ValueError(f"fallback must name exactly the levels {', '.join(LEVEL_NAMES[1:])}")
        for level, target in self.fallback.items():
            if target not in LEVEL_NAMES[: LEVEL_NAMES.index(level)]:
                raise ValueError(
                    f"fallback.{level} must name a level before it "
                    f"({', '.join(LEVEL_NAMES[: LEVEL_NAMES.index(level)])}), got {target!r}"
                )
        return self

    @model_validator(mode="after")
    def _case_insensitive_tables(self) -> PromptSet:
        self._generator_names = _casefold_index(self.generators, "generators")
        self._aliases_by_case = {
            kind: {
                key.casefold(): target
                for key, target in zip(_casefold_index(table, f"aliases.{kind}"), table.values(), strict=True)
            }
            for kind, table in self.aliases.items()
        }
        _casefold_index(self.dataset_levels, "dataset_levels")
        masks: dict[str, tuple[bool, ...]] = {}
        for dataset, levels in self.dataset_levels.items():
            unknown = [level for level in levels if level not in LEVEL_NAMES]
            if unknown:
                raise ValueError(
                    f"dataset_levels.{dataset}: unknown level {unknown[0]!r}; "
                    f"levels: {', '.join(LEVEL_NAMES)}"
                )
            if "authenticity" not in levels:
                raise ValueError(f"dataset_levels.{dataset} must include authenticity (level 1)")
            masks[dataset.strip().casefold()] = tuple(level in levels for level in LEVEL_NAMES)
        self._dataset_masks = masks
        return self

    def canonical(self, kind: str, value: str | None) -> str | None:
        """A dataset's spelling of a forgery type, family or generator in canonical form (None if empty).

        Aliases match ignoring case; a forgery type or family is then lower-cased, and a generator takes
        the spelling of the generator table when it matches one ignoring case.
        """
        if value is None:
            return None
        text = str(value).strip()
        if not text or text.casefold() in {v.casefold() for v in self.unknown_values}:
            return None
        table = self.aliases.get(kind, {})
        if text in table:
            text = table[text]
        else:
            text = self._aliases_by_case.get(kind, {}).get(text.casefold(), text)
        if kind == "generator":
            return self._generator_names.get(text.casefold(), text)
        return text.lower() if kind in ("forgery_type", "family") else text

    def levels_supplied(self, dataset: str | None) -> tuple[bool, ...]:
        """Which of the four levels rows of ``dataset`` can supply (``dataset_levels``; default all)."""
        if dataset is None:
            return ALL_LEVELS_KNOWN
        return self._dataset_masks.get(str(dataset).strip().casefold(), ALL_LEVELS_KNOWN)

    def resolve_labels(
        self, forgery_type: str | None, family: str | None, generator: str | None
    ) -> tuple[str | None, str | None, str | None]:
        """Canonical (forgery_type, family, generator), filling empty ones from the generator table."""
        generator = self.canonical("generator", generator)
        forgery_type = self.canonical("forgery_type", forgery_type)
        family = self.canonical("family", family)
        info = self.generators.get(generator) if generator else None
        if info is not None:
            forgery_type = forgery_type or info.forgery_type
            family = family or info.family
        return forgery_type, family, generator

    def prompts_for(
        self,
        label: int,
        forgery_type: str | None = None,
        family: str | None = None,
        generator: str | None = None,
        dataset: str | None = None,
    ) -> tuple[list[str], list[bool]]:
        """The four prompts of one image and which levels are known.

        A level that ``dataset`` does not supply (:meth:`levels_supplied`) is unknown whatever the labels
        say: a fake image reads its fallback prompt there, and the mask is False for real and fake alike.
        """
        supplied = self.levels_supplied(dataset)
        if int(label) == 0:
            return [self.real] * NUM_LEVELS, list(supplied)
        if int(label) != 1:
            raise ValueError(f"label must be 0 (real) or 1 (fake), got {label!r}")
        forgery_type, family, generator = self.resolve_labels(forgery_type, family, generator)
        own: dict[str, str | None] = {
            "authenticity": self.levels.authenticity,
            "forgery_type": self._level_prompt("forgery_type", forgery_type, self.levels.forgery_type),
            "family": self._level_prompt("family", family, self.levels.family),
            "generator": self.levels.generator.format(generator=generator) if generator else None,
        }
        for level, known in zip(LEVEL_NAMES, supplied, strict=True):
            if not known:
                own[level] = None
        prompts: dict[str, str] = {}
        for level in LEVEL_NAMES:
            text = own[level]
            prompts[level] = text if text is not None else prompts[self.fallback[level]]
        return [prompts[level] for level in LEVEL_NAMES], [own[level] is not None for level in LEVEL_NAMES]

    def _level_prompt(self, kind: str, value: str | None, table: dict[str, str]) -> str | None:
        """The prompt of a canonical value; an unrecognised value warns once and counts as unknown."""
        if value is None:
            return None
        if value in table:
            return table[value]
        if (kind, value) not in self._warned:
            self._warned.add((kind, value))
            aliases = sorted(self.aliases.get(kind, {}))
            warnings.warn(
                f"prompt set {self.name!r}: unrecognised {kind} {value!r}, its prompt level is treated as "
                f"unknown; accepted: {', '.join(table)} or an alias ({', '.join(aliases) or 'none'})",
                UserWarning,
                stacklevel=3,
            )
        return None

    def all_prompts(self) -> list[str]:
        """Every distinct prompt this set can produce for the generators it lists."""
        texts = {self.real, self.levels.authenticity}
        texts.update(self.levels.forgery_type.values())
        texts.update(self.levels.family.values())
        texts.update(self.levels.generator.format(generator=g) for g in self.generators)
        return sorted(texts)


def _casefold_index(table: dict[str, object], field: str) -> dict[str, str]:
    """Lower-case key → the table's own spelling; two keys equal but for case are an error."""
    index: dict[str, str] = {}
    for key in table:
        folded = key.casefold()
        if folded in index:
            raise ValueError(f"{field}: {index[folded]!r} and {key!r} differ only in case (names ignore it)")
        index[folded] = key
    return index


def list_prompt_sets() -> list[str]:
    return sorted(p.stem for p in _PROMPT_DIR.glob("*.yaml"))


@functools.lru_cache(maxsize=16)
def load_prompt_set(name_or_path: str = "default") -> PromptSet:
    """Load a bundled prompt set by name, or a YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = _PROMPT_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown prompt set {name_or_path!r}; bundled: {list_prompt_sets()}")
    return PromptSet.from_dict(load_yaml(path), source=str(path))


@functools.lru_cache(maxsize=1)
def _tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=CONTEXT_LENGTH)


def tokenize(texts: str | list[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """CLIP BPE tokens, shape (N, context_length), int64; identical to OpenAI's tokenizer."""
    if isinstance(texts, str):
        texts = [texts]
    return _tokenizer()(list(texts), context_length=context_length)
