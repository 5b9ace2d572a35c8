"""The fine-grained text generator (FTG): labels → four hierarchical prompts → CLIP tokens.

Prompt sets are data (``configs/prompts/*.yaml``). Levels:
1 authenticity, 2 forgery type, 3 generator family, 4 generator. A real image reads the real prompt at
every level. A fake image whose label for a level is unknown gets the previous level's prompt in that
slot and ``False`` in the level mask, so only the levels it has are used.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from pydantic import Field

from mfclip.utils.config import ConfigError, StrictConfig, load_yaml

NUM_LEVELS = 4
LEVEL_NAMES = ("authenticity", "forgery_type", "family", "generator")
CONTEXT_LENGTH = 77
VOCAB_SIZE = 49408
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


class PromptSet(StrictConfig):
    """A prompt set: the real prompt, the fake prompts per level, aliases and the generator table."""

    name: str
    real: str
    levels: PromptLevels
    aliases: dict[str, dict[str, str]] = Field(default_factory=dict)
    generators: dict[str, GeneratorInfo] = Field(default_factory=dict)

    def canonical(self, kind: str, value: str | None) -> str | None:
        """Map a dataset's spelling of a forgery type or family onto the canonical name (None if empty)."""
        if value is None:
            return None
        text = str(value).strip()
        if not text or text.lower() in ("nan", "none", "unknown"):
            return None
        table = self.aliases.get(kind, {})
        for candidate in (text, text.lower()):
            if candidate in table:
                return table[candidate]
        return text.lower() if kind in ("forgery_type", "family") else text

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
    ) -> tuple[list[str], list[bool]]:
        """The four prompts of one image and which levels are known."""
        if int(label) == 0:
            return [self.real] * NUM_LEVELS, [True] * NUM_LEVELS
        if int(label) != 1:
            raise ValueError(f"label must be 0 (real) or 1 (fake), got {label!r}")
        forgery_type, family, generator = self.resolve_labels(forgery_type, family, generator)
        prompts = [self.levels.authenticity]
        mask = [True]
        candidates = [
            self.levels.forgery_type.get(forgery_type) if forgery_type else None,
            self.levels.family.get(family) if family else None,
            self.levels.generator.format(generator=generator) if generator else None,
        ]
        for text in candidates:
            mask.append(text is not None)
            prompts.append(text if text is not None else prompts[-1])
        return prompts, mask

    def all_prompts(self) -> list[str]:
        """Every distinct prompt this set can produce for the generators it lists."""
        texts = {self.real, self.levels.authenticity}
        texts.update(self.levels.forgery_type.values())
        texts.update(self.levels.family.values())
        texts.update(self.levels.generator.format(generator=g) for g in self.generators)
        return sorted(texts)


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
