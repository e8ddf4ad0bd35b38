"""Errors raised by beit-build.

BuildError
├── CheckpointNotFoundError      no checkpoint at that hub id or folder
│   └── HubUnreachableError      a hub id while the Hub is out of reach, and no cached copy
├── UnsupportedCheckpointError   the checkpoint is not a BEiT / data2vec-vision image classifier
├── PreprocessingError           the image processor config disagrees with the model (resolution)
├── LabelsError                  a labels file does not match the classifier head
├── TemplateWriteError           a build aimed at the committed template instead of an output directory
├── VerificationError            the exported ONNX does not reproduce PyTorch
└── EngineCheckError             check-engine cannot run the asked engine
"""

from __future__ import annotations


class BuildError(Exception):
    """Root of every error beit-build raises on purpose."""


class CheckpointNotFoundError(BuildError):
    pass


class HubUnreachableError(CheckpointNotFoundError):
    pass


class UnsupportedCheckpointError(BuildError):
    pass


class PreprocessingError(BuildError):
    pass


class LabelsError(BuildError):
    pass


class TemplateWriteError(BuildError):
    pass


class VerificationError(BuildError):
    pass


class EngineCheckError(BuildError):
    pass
