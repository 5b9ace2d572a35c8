"""Dataset importers: scan a dataset's own layout and write a manifest.

``list_importers()`` names them; ``run_import(name, root, out, ...)`` writes the manifest and
``<out>.skipped.csv``; ``import_dataset(...)`` returns the rows without writing. Every importer reports
the files it did not import, with a reason, instead of dropping them silently.
"""

from __future__ import annotations

from mfclip.data.importers import (  # noqa: F401  (importing registers each importer)
    celebdf,
    deepfakebench,
    dfdc,
    diff,
    diffusionface,
    ffpp,
    folder,
    genface,
)
from mfclip.data.importers.base import (
    ImporterError,
    ImporterInfo,
    ImportResult,
    SkippedFile,
    check_file,
    get_importer,
    import_dataset,
    list_importers,
    register_importer,
    run_import,
    skipped_log_path,
)

__all__ = [
    "ImportResult",
    "ImporterError",
    "ImporterInfo",
    "SkippedFile",
    "check_file",
    "get_importer",
    "import_dataset",
    "list_importers",
    "register_importer",
    "run_import",
    "skipped_log_path",
]
