"""The checkpoint's own image processor settings, as the JSON-text parameters the preprocessor reads."""

from __future__ import annotations

from transformers import BaseImageProcessor, PretrainedConfig

from beit_build.errors import PreprocessingError
from beit_preprocessing import PreprocessingConfig


def preprocessing_config(image_processor: BaseImageProcessor) -> PreprocessingConfig:
    try:
        return PreprocessingConfig.from_image_processor_dict(image_processor.to_dict())
    except ValueError as e:
        raise PreprocessingError(f"unsupported image processor settings: {e}") from e


def preprocessing_parameters(image_processor: BaseImageProcessor) -> dict[str, str]:
    return preprocessing_config(image_processor).to_parameters()


def export_resolution(image_processor: BaseImageProcessor, config: PretrainedConfig) -> tuple[int, int]:
    """(height, width) of the processor's output, which must be the model's own image_size."""
    try:
        resolution = preprocessing_config(image_processor).output_size
    except ValueError as e:
        raise PreprocessingError(f"the image processor has no fixed output size: {e}") from e
    image_size = config.image_size
    expected = tuple(image_size) if isinstance(image_size, (list, tuple)) else (image_size, image_size)
    if resolution != expected:
        raise PreprocessingError(
            f"the image processor outputs {resolution[0]}x{resolution[1]} images, "
            f"the model's config.image_size is {expected[0]}x{expected[1]}"
        )
    return resolution
