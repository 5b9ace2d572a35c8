"""A deterministic SYNTHETIC face-forgery benchmark for tests, CI and offline demos.

"Real" images are procedurally rendered faces seen through a simulated camera; "fakes" come from named
simulated generators (diffusion-like and GAN-like; entire synthesis, face swap, attribute manipulation).
No image shows a real person. Public API:

- :func:`generate_benchmark` → :class:`SynthResult`: write images, manifest, protocol, README, synth.json;
- :func:`check_settings`: refuse a seed, size, image size or worker count it cannot use;
- :data:`SYNTH_GENERATORS`: metadata of each generator (:class:`SynthGeneratorInfo`);
- :data:`SEEN_GENERATORS` / :data:`UNSEEN_GENERATORS`: the protocol's split of generators;
- :func:`protocol_dict`: the protocol written as ``protocol.yaml``.
"""

from mfclip.data.synth.benchmark import (
    SYNTH_VERSION,
    SynthError,
    SynthResult,
    check_settings,
    generate_benchmark,
    protocol_dict,
    protocol_yaml,
)
from mfclip.data.synth.generators import (
    FAMILIES,
    FORGERY_TYPES,
    SEEN_GENERATORS,
    SYNTH_GENERATORS,
    UNSEEN_GENERATORS,
    SynthGeneratorInfo,
)
from mfclip.data.synth.plan import MAX_SIZE, MIN_SIZE
from mfclip.schema import MANIFEST_COLUMNS  # the columns of manifest.csv

__all__ = [
    "FAMILIES",
    "FORGERY_TYPES",
    "MANIFEST_COLUMNS",
    "MAX_SIZE",
    "MIN_SIZE",
    "SEEN_GENERATORS",
    "SYNTH_GENERATORS",
    "SYNTH_VERSION",
    "UNSEEN_GENERATORS",
    "SynthError",
    "SynthGeneratorInfo",
    "SynthResult",
    "check_settings",
    "generate_benchmark",
    "protocol_dict",
    "protocol_yaml",
]
