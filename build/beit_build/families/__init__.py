"""The checkpoint families beit-build exports, one module each. A new family is one more module here, with
its entry in FAMILIES: how to recognize and load it, its export quirks, its pooled output and classifier,
and where its preprocessing comes from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from beit_build.families import beit, data2vec_vision, timm_beit
from beit_build.families.base import Checkpoint, CheckpointFamily, LayerScale

__all__ = ["FAMILIES", "Checkpoint", "CheckpointFamily", "LayerScale", "family_of"]

FAMILIES: tuple[CheckpointFamily, ...] = (beit.FAMILY, data2vec_vision.FAMILY, timm_beit.FAMILY)


def family_of(config: Mapping[str, Any]) -> CheckpointFamily | None:
    """The family whose checkpoints have this config.json, if any."""
    return next((family for family in FAMILIES if family.recognizes(config)), None)
