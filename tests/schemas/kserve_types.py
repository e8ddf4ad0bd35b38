"""Extract KServe's API types from its PyPI SDK wheel into tests/schemas/kserve-v1beta1-types.json.

The kserve SDK's models (kserve/models/v1beta1_*.py) are generated from the OpenAPI spec of KServe's Go API
types, the same types its CRDs are generated from: `openapi_types` (Python attribute -> type) and
`attribute_map` (Python attribute -> JSON field). This keeps both, per class, as data;
tests/test_kubernetes.py checks deploy/kubernetes/kserve/ against them. Kubernetes types inside
(V1Container fields, V1Volume...) are checked against the Kubernetes schemas instead.

    pip download --no-deps kserve==0.21.0 -d /tmp/kserve
    python tests/schemas/kserve_types.py /tmp/kserve/kserve-0.21.0-py3-none-any.whl
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
import zipfile
from pathlib import Path

OUTPUT = Path(__file__).resolve().parent / "kserve-v1beta1-types.json"


def class_tables(source: str) -> dict[str, dict[str, str]]:
    tables = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        found = {}
        for statement in node.body:
            if isinstance(statement, ast.Assign) and isinstance(statement.targets[0], ast.Name):
                name = statement.targets[0].id
                if name in {"openapi_types", "attribute_map"}:
                    found[name] = ast.literal_eval(statement.value)
        if found.keys() == {"openapi_types", "attribute_map"}:
            types, fields = found["openapi_types"], found["attribute_map"]
            tables[node.name] = {fields[attribute]: types[attribute] for attribute in types}
    return tables


def main(wheel: Path) -> None:
    name, version = wheel.name.split("-")[:2]
    types: dict[str, dict[str, str]] = {}
    with zipfile.ZipFile(wheel) as archive:
        for member in sorted(archive.namelist()):
            if member.startswith("kserve/models/v1beta1_") and member.endswith(".py"):
                types.update(class_tables(archive.read(member).decode()))
    document = {
        "source": f"PyPI {name}=={version}, kserve/models/v1beta1_*.py (openapi_types, attribute_map)",
        "wheel_sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
        "types": types,
    }
    OUTPUT.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
