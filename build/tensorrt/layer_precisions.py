"""Fail unless the built TensorRT engine runs every LayerNormalization of model.onnx in FP32.

trtexec takes `--layerPrecisions=NAME:fp32,...` and silently ignores a NAME that matches no layer, so the
arguments alone prove nothing. After the build, trtexec's layer information (`--profilingVerbosity=detailed
--exportLayerInfo=FILE`, the JSON of TensorRT's IEngineInspector) says what the engine does. Its format, as
trtexec writes it (e.g. NVIDIA/TensorRT tools/experimental/trt-engine-explorer/examples/.../*.graph.json):

    {"Layers": [{"Name": "Conv_5 + Add_6 + Relu_7", "LayerType": "CaskConvolution",
                 "Inputs": [{"Name": ..., "Dimensions": [...], "Format/Datatype": "Row major linear FP32"}],
                 "Outputs": [...], ...}, ...],
     "Bindings": ["PIXEL_VALUES", ...]}

A layer is named after its ONNX node; fused layers join their nodes' names with " + ". Myelin regions
("LayerType": "Myelin", named "{ForeignNode[FIRST...LAST]}") hide the precision of the nodes inside them.
A LayerNormalization passes only when a layer that names it, outside any Myelin region, writes FP32 outputs.

Runs inside the TensorRT container beside plan_args.py (stdlib and onnx only). Exit 0 and one line when every
LayerNormalization is FP32; exit 1 with one line per LayerNormalization that is not (or not shown to be).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

FUSION_SEPARATOR = " + "
DATATYPE = re.compile(r"\b(FP32|FP16|BF16|FP8|FP4|INT4|INT8|Int8|INT32|Int32|INT64|Int64|Bool|UInt8)\b")


class LayerInfoError(ValueError):
    """The layer information is not trtexec's detailed JSON."""


def layer_norm_names(onnx_path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type == "LayerNormalization"]


def load_layers(path: Path) -> list[Mapping[str, Any]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise LayerInfoError(f"{path}: not trtexec's layer information: {e}") from e
    layers = document.get("Layers") if isinstance(document, dict) else None
    if not isinstance(layers, list) or not layers:
        raise LayerInfoError(f'{path}: no "Layers" list (trtexec --exportLayerInfo writes one)')
    if not all(isinstance(layer, dict) and "Outputs" in layer for layer in layers):
        raise LayerInfoError(
            f"{path}: layers without tensor formats: build with --profilingVerbosity=detailed, without which "
            "trtexec exports layer names only"
        )
    return layers


def is_myelin(layer: Mapping[str, Any]) -> bool:
    return layer.get("LayerType") == "Myelin" or str(layer.get("Name", "")).startswith("{ForeignNode[")


def output_datatypes(layer: Mapping[str, Any]) -> set[str]:
    found = set()
    for tensor in layer["Outputs"]:
        match = DATATYPE.search(str(tensor.get("Format/Datatype", "")))
        found.add(match.group(1).upper() if match else "UNKNOWN")
    return found


def problems(layer_norms: Sequence[str], layers: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per LayerNormalization the engine does not show to run in FP32."""
    found = []
    for name in layer_norms:
        named = [layer for layer in layers if name in str(layer.get("Name", "")).split(FUSION_SEPARATOR)]
        hidden = [layer for layer in layers if is_myelin(layer) and name in str(layer.get("Name", ""))]
        visible = [layer for layer in named if not is_myelin(layer)]
        if not visible:
            where = (
                f"inside the Myelin region {hidden[0]['Name']}, which reports no per-layer precision"
                if hidden
                else "no engine layer is named after it (trtexec ignored its --layerPrecisions entry)"
            )
            found.append(f"{name}: {where}")
            continue
        for layer in visible:
            datatypes = ", ".join(sorted(output_datatypes(layer)))
            if datatypes != "FP32":
                found.append(f"{name}: layer {layer['Name']!r} writes {datatypes}, not FP32")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True, help="beit_model/1/model.onnx")
    parser.add_argument("--layer-info", type=Path, required=True, help="trtexec --exportLayerInfo output")
    args = parser.parse_args(argv)
    names = layer_norm_names(args.onnx)
    if not names:
        sys.stderr.write(f"layer_precisions: {args.onnx} has no LayerNormalization node\n")
        return 1
    try:
        found = problems(names, load_layers(args.layer_info))
    except LayerInfoError as e:
        sys.stderr.write(f"layer_precisions: {e}\n")
        return 1
    if found:
        sys.stderr.write(
            f"layer_precisions: {len(found)} of {len(names)} LayerNormalization nodes are not shown to run "
            "in FP32:\n" + "".join(f"  {line}\n" for line in found)
        )
        return 1
    sys.stdout.write(f"layer_precisions: all {len(names)} LayerNormalization layers run in FP32\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
