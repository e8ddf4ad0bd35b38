"""beit-build: a BEiT checkpoint turned into a built Triton model repository."""

from beit_build.build import BuildResult, build_repository
from beit_build.errors import (
    BuildError,
    CheckpointNotFoundError,
    HubUnreachableError,
    LabelsError,
    PreprocessingError,
    TemplateWriteError,
    UnsupportedCheckpointError,
    VerificationError,
)

__all__ = [
    "BuildError",
    "BuildResult",
    "CheckpointNotFoundError",
    "HubUnreachableError",
    "LabelsError",
    "PreprocessingError",
    "TemplateWriteError",
    "UnsupportedCheckpointError",
    "VerificationError",
    "build_repository",
]
