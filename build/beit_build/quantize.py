"""model.int8.onnx: the exported model.onnx with its weight MatMuls quantized to int8, for CPU serving past
the fp32 ceiling (issue 14; the embedded server's `embedded_int8` variant runs it).

ONNX Runtime's dynamic quantization (`onnxruntime.quantization.quantize_dynamic`): weights are stored int8
once, and each MatMul's activations are quantized to uint8 per call from their own range, so no calibration
set is needed and the input and outputs stay fp32. What stays fp32, and why:

- LayerNorm, Softmax, GELU and the attention score MatMuls (Q·Kᵀ, P·V): dynamic quantization has integer
  kernels for MatMul with a constant weight only (`MatMulConstBOnly`, on by default for dynamic
  quantization), so these are never touched.
- The classifier head: it decides top-1 from the margins between classes, so it is excluded by name
  (`classifier_head_nodes`). In today's export it is a Gemm, which dynamic quantization leaves fp32 anyway
  (Gemm is not in ONNX Runtime's `IntegerOpsRegistry`); the exclusion keeps it so whatever op the exporter
  emits.
- The patch embedding (a Conv): quantizing it to ConvInteger is not worth its error; it is one op of ~1% of
  the FLOPs.

Per-tensor weights (`per_channel=False`): measured on this 2-core AMD EPYC (AVX2, no VNNI), ONNX Runtime
1.31.1, one run each, int8 against fp32 model.onnx on loadtest's photo corpus:

- confident tiny checkpoint (tests/checkpoints.py), 128 photos: per-tensor top-1 agreement 100%, top-5
  99.2%, max |Δprob| 0.079; per-channel top-1 96.9%, top-5 98.0%, max |Δprob| 0.47; per-channel with
  `reduce_range` (7-bit weights) top-1 99.2%, max |Δprob| 0.076; per-tensor with `reduce_range` top-1 100%,
  max |Δprob| 0.12.
- full-size BEiT-base, random weights: see README "int8 on CPU" for throughput and logit error.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from beit_repository.names import EMBEDDING, LOGITS

INT8 = "int8"
QUANTIZATIONS = (INT8,)
"""What beit-build --quantize accepts."""
QUANTIZED_OPS = ("MatMul",)
PER_CHANNEL = False
"""Per-tensor weight scales agreed better with fp32 than per-channel ones (module docstring)."""


def quantize_int8(source: Path, destination: Path) -> None:
    """Write the int8 model of `source` (an exported model.onnx) to `destination`."""
    quantize_dynamic(
        source,
        destination,
        op_types_to_quantize=list(QUANTIZED_OPS),
        per_channel=PER_CHANNEL,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=classifier_head_nodes(onnx.load(str(source), load_external_data=False).graph),
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
