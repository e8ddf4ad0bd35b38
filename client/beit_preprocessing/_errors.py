"""Errors for images a caller sent that cannot be preprocessed.

    InvalidImageError (ValueError)
    ├── EmptyImageError         no bytes at all
    ├── UndecodableImageError   not an image in a supported format
    ├── TruncatedImageError     header parsed, pixel data truncated or corrupt
    ├── TooManyPixelsError      more pixels than allowed (decompression-bomb guard)
    └── InconsistentSizesError  images of one request preprocess to different shapes

Every one is the caller's fault, never the server's: the Triton preprocessor answers it as INVALID_ARG.
"""

from __future__ import annotations


class InvalidImageError(ValueError):
    """An image that cannot be preprocessed; the message says why."""


class EmptyImageError(InvalidImageError):
    pass


class UndecodableImageError(InvalidImageError):
    pass


class TruncatedImageError(InvalidImageError):
    pass


class TooManyPixelsError(InvalidImageError):
    pass


class InconsistentSizesError(InvalidImageError):
    pass
