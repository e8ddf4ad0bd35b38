"""Image preprocessing for BEiT checkpoints, bit-faithful to transformers' `BeitImageProcessorPil`, or to
timm's eval transform for timm checkpoints (`PreprocessingConfig.pipeline`).

The pixels stop at uint8 after the resize and crop (`Pixels`): the exported network starts with the
rescale and normalize, bit for bit `normalization_table`'s values; `normalize` applies that table here.

Depends on numpy and Pillow only: the Triton Python-backend preprocessor and the client SDK's client-side
preprocessing both import it, so the server and the client compute the same pixels.
"""

from beit_preprocessing._batch import preprocess_batch, preprocess_requests
from beit_preprocessing._config import (
    MODES,
    PARAMETER_KEYS,
    PIPELINES,
    Mode,
    Pipeline,
    PreprocessingConfig,
    SizeSpec,
)
from beit_preprocessing._decode import DEFAULT_MAX_PIXELS, SUPPORTED_FORMATS, decode_image
from beit_preprocessing._errors import (
    EmptyImageError,
    InconsistentSizesError,
    InvalidImageError,
    TooManyPixelsError,
    TruncatedImageError,
    UndecodableImageError,
)
from beit_preprocessing._transforms import (
    NormalizationSteps,
    NormalizedPixels,
    Pixels,
    exact_normalization_steps,
    normalization_table,
    normalize,
    preprocess_bytes,
    preprocess_image,
    resize_output_size,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "EmptyImageError",
    "InconsistentSizesError",
    "InvalidImageError",
    "MODES",
    "Mode",
    "NormalizationSteps",
    "NormalizedPixels",
    "PARAMETER_KEYS",
    "PIPELINES",
    "Pipeline",
    "Pixels",
    "PreprocessingConfig",
    "SUPPORTED_FORMATS",
    "SizeSpec",
    "TooManyPixelsError",
    "TruncatedImageError",
    "UndecodableImageError",
    "decode_image",
    "exact_normalization_steps",
    "normalization_table",
    "normalize",
    "preprocess_batch",
    "preprocess_bytes",
    "preprocess_image",
    "preprocess_requests",
    "resize_output_size",
]
