"""mfclip: generalizable detection of diffusion-generated and manipulated faces with MFCLIP.

Public API: :func:`create_model`, :func:`list_models`, :class:`Detector` and ``__version__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Detector", "__version__", "create_model", "list_models"]

if TYPE_CHECKING:
    from mfclip.inference.detector import Detector
    from mfclip.models.registry import create_model, list_models


def __getattr__(name: str) -> Any:
    # Lazy imports keep `import mfclip` and `mfclip --help` fast.
    if name in ("create_model", "list_models"):
        from mfclip.models import registry

        return getattr(registry, name)
    if name == "Detector":
        from mfclip.inference.detector import Detector

        return Detector
    raise AttributeError(f"module 'mfclip' has no attribute {name!r}")
