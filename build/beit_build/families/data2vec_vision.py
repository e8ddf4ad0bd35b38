"""transformers' Data2VecVisionForImageClassification: facebook/data2vec-vision-* and their fine-tunes."""

from transformers import Data2VecVisionForImageClassification
from transformers.models.data2vec.modeling_data2vec_vision import (
    Data2VecVisionLayer,
    Data2VecVisionRelativePositionBias,
)

from beit_build.families._transformers import TransformersFamily

FAMILY = TransformersFamily(
    model_type="data2vec-vision",
    model_class=Data2VecVisionForImageClassification,
    layer_class=Data2VecVisionLayer,
    bias_class=Data2VecVisionRelativePositionBias,
    scaled_linears=lambda layer: (layer.attention.output.dense, layer.output.dense),
    # Data2VecVisionLayer skips a lambda that is None.
    folded_value=None,
)
