"""The committed model repository template, found the same way in a checkout and in an installed wheel."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def template_directory() -> Path:
    """`model_repository/` of the source tree: the hand-written configs and Python-backend models, no
    artifacts. In the checkout the package's `model_repository` is a symlink to it, which an editable install
    uses in place; building the wheel follows the link, so a regular install carries a copy. pip always
    unpacks wheels onto the file system, so this is a real directory."""
    return Path(str(files(__package__) / "model_repository"))
