"""Loading a checkpoint (hub id or local folder) through the family its config.json belongs to."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import PretrainedConfig

from beit_build.errors import CheckpointNotFoundError, UnsupportedCheckpointError
from beit_build.families import FAMILIES, Checkpoint, family_of
from beit_build.hub import locate_checkpoint

logger = logging.getLogger(__name__)


def load_checkpoint(source: str | Path, *, name: str | None = None) -> Checkpoint:
    """`name` is what the repository records as the checkpoint (the hub id or folder by default)."""
    name = name if name is not None else str(source)
    source = locate_checkpoint(source)
    logger.info("loading checkpoint %s", name)
    try:
        # The hub's (or the folder's) config.json as a plain dict: recognizing a family imports nothing of it.
        config, _ = PretrainedConfig.get_config_dict(source)
    except OSError as e:
        raise CheckpointNotFoundError(f"cannot load {name}: {e}") from e
    family = family_of(config)
    if family is None:
        raise UnsupportedCheckpointError(
            f"{name} is {_describe(config)}; beit-build exports image classifiers of the families "
            f"{', '.join(family.name for family in FAMILIES)}"
        )
    return family.load(source, name)


def _describe(config: dict[str, object]) -> str:
    # transformers reads a timm config.json (which has "architecture", not "architectures") as "timm_wrapper".
    if "architecture" in config and config.get("model_type", "timm_wrapper") == "timm_wrapper":
        return f"a timm checkpoint ({config['architecture']})"
    return f"a {config.get('model_type')!r} checkpoint (architectures {config.get('architectures')})"
