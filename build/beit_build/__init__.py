"""beit-build: a BEiT checkpoint turned into the Triton model repository's artifacts."""

from beit_build.build import BuildResult, build_repository
from beit_build.errors import (
    BuildError,
    CheckpointNotFoundError,
    LabelsError,
    PreprocessingError,
    UnsupportedCheckpointError,
    VerificationError,
)

__all__ = [
    "BuildError",
    "BuildResult",
    "CheckpointNotFoundError",
    "LabelsError",
    "PreprocessingError",
    "UnsupportedCheckpointError",
    "VerificationError",
    "build_repository",
]
