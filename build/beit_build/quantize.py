"""model.int8.onnx: the exported model.onnx with its weight MatMuls quantized to int8, for CPU serving past
the fp32 ceiling (issue 14; the embedded server's `embedded_int8` variant runs it).

ONNX Runtime's dynamic quantization (`onnxruntime.quantization.quantize_dynamic`): weights are stored int8
once, and each MatMul's activations are quantized to uint8 per call from their own range, so no calibration
set is needed and the graph's input (uint8 pixels) and outputs (fp32) keep their types. What stays fp32,
and why:

- LayerNorm, Softmax, GELU and the attention score MatMuls (Q·Kᵀ, P·V): dynamic quantization has integer
  kernels for MatMul with a constant weight only (`MatMulConstBOnly`, on by default for dynamic
  quantization), so these are never touched.
- The classifier head: it decides top-1 from the margins between classes, so it is excluded by name
  (`classifier_head_nodes`). Quantizing it too multiplied the max |Δprob| by 70-130 (below).
- The patch embedding (a Conv): not in QUANTIZED_OPS; one op of ~1% of the FLOPs, not worth ConvInteger's
  error.

Per-tensor weights (`per_channel=False`, no `reduce_range`) agreed best. Measured on this 2-core AMD EPYC
(AVX2, no VNNI), ONNX Runtime 1.31.1, one run: the tests' tiny checkpoint (tests/checkpoints.py, a spread
head: fp32 mean top-1 probability 0.887) on 128 photos of loadtest's corpus, int8 against fp32 model.onnx:

| weights | head | top-1 | top-5 | max abs Δprob |
| --- | --- | --- | --- | --- |
| per-tensor | fp32 | 100% | 100% | 0.00094 |
| per-tensor, reduce_range | fp32 | 100% | 100% | 0.0017 |
| per-channel | fp32 | 100% | 100% | 0.0036 |
| per-channel, reduce_range | fp32 | 100% | 100% | 0.00098 |
| per-tensor | int8 | 100% | 99.2% | 0.079 |
| per-channel | int8 | 96.9% | 98.0% | 0.47 |

Full-size BEiT-base's figures (random weights: speed, and how far logits move) are in README "int8 on CPU".
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.onnx_model import ONNXModel

from beit_repository.names import EMBEDDING, LOGITS

INT8 = "int8"
QUANTIZATIONS = (INT8,)
"""What beit-build --quantize accepts."""
QUANTIZED_OPS = ("MatMul",)
PER_CHANNEL = False
"""Per-tensor weight scales agreed best with fp32 (module docstring)."""


def quantize_int8(source: Path, destination: Path) -> None:
    """Write the int8 model of `source` (an exported model.onnx) to `destination`."""
    model = onnx.load(str(source))
    # Dynamic quantization rewrites every Gemm as MatMul + Add under new names before it excludes nodes by
    # name; rewritten here first with its own code, the head's names are those it will see.
    ONNXModel(model).replace_gemm_with_matmul()
    quantize_dynamic(
        model,
        destination,
        op_types_to_quantize=list(QUANTIZED_OPS),
        per_channel=PER_CHANNEL,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=classifier_head_nodes(model.graph),
    )


def classifier_head_nodes(graph: onnx.GraphProto) -> list[str]:
    """The nodes LOGITS depends on and EMBEDDING does not: the head on top of the pooled embedding."""
    return sorted(_ancestors(graph, LOGITS) - _ancestors(graph, EMBEDDING))


def _ancestors(graph: onnx.GraphProto, output: str) -> set[str]:
    """Names of the nodes `output` is computed from, itself included."""
    producers = {tensor: node for node in graph.node for tensor in node.output}
    found: set[str] = set()
    pending: list[str] = [output]
    while pending:
        node = producers.get(pending.pop())
        if node is not None and node.name not in found:
            found.add(node.name)
            pending.extend(node.input)
    return found
