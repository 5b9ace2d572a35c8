"""The strongest CLIP-based peers of MFCLIP, written from their papers, in the same harness.

Importing this package registers the model types ``effort`` (:mod:`.effort`), ``gend`` (:mod:`.gend`) and
``rine`` (:mod:`.rine`). UnivFD's linear probe is a ``clip_probe`` (:mod:`mfclip.models.baselines`) preset
(``univfd-l14``, ``univfd-b16``, ``univfd-tiny``). Presets and every deviation from the papers:
``docs/peers.md``.
"""

from __future__ import annotations

from mfclip.models.peers.effort import Effort, EffortConfig
from mfclip.models.peers.gend import GenD, GenDConfig
from mfclip.models.peers.rine import RINE, RINEConfig

__all__ = ["RINE", "Effort", "EffortConfig", "GenD", "GenDConfig", "RINEConfig"]
