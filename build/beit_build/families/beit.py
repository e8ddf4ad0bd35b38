"""transformers' BeitForImageClassification: microsoft/beit-* and their fine-tunes."""

from transformers import BeitForImageClassification
from transformers.models.beit.modeling_beit import BeitLayer, BeitRelativePositionBias

from beit_build.families._transformers import TransformersFamily

FAMILY = TransformersFamily(
    model_type="beit",
    model_class=BeitForImageClassification,
    layer_class=BeitLayer,
    bias_class=BeitRelativePositionBias,
    scaled_linears=lambda layer: (layer.attention.o_proj, layer.mlp.fc2),
    # BeitLayer multiplies by its lambda unconditionally.
    folded_value=1.0,
)
