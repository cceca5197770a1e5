"""Custom resources checked offline against their published CRD schemas (tests/schemas/).

No kube-apiserver runs here, so :func:`schema_errors` applies a vendored openAPIV3Schema the
way the API server does with strict field validation: unknown fields are errors, and the
object's apiVersion, kind and metadata are implied where a schema leaves them out. Go's
``^(?i)`` becomes Python's ``(?i)^``. CEL rules (x-kubernetes-validations) are not evaluated.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

__all__ = ["SCHEMA_FILES", "schema_errors", "strict_schema"]

SCHEMAS = Path(__file__).resolve().parent / "schemas"
#: (apiVersion, kind) -> its vendored schema (see tests/schemas/README.md for the sources).
SCHEMA_FILES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.v1.json",
    ("networking.istio.io/v1", "VirtualService"): "networking.istio.io_virtualservices.v1.json",
    (
        "security.istio.io/v1",
        "AuthorizationPolicy",
    ): "security.istio.io_authorizationpolicies.v1.json",
    ("kubeflow.org/v1alpha1", "PodDefault"): "kubeflow.org_poddefaults.v1alpha1.json",
}


def _strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        k: _strict(v) if k in ("items", "not", "anyOf", "oneOf", "allOf") else v
        for k, v in schema.items()
    }
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _strict(out["additionalProperties"])
    if "properties" in out:
        out["properties"] = {k: _strict(v) for k, v in out["properties"].items()}
        out.setdefault("additionalProperties", False)
    if isinstance(out.get("pattern"), str):
        out["pattern"] = out["pattern"].replace("^(?i)", "(?i)^")
    return out


@cache
def strict_schema(file: str) -> dict[str, Any]:
    """The vendored schema ``file``, strict, with apiVersion, kind and metadata implied."""
    schema = json.loads((SCHEMAS / file).read_text())
    schema["properties"] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        **schema["properties"],
    }
    checked: dict[str, Any] = _strict(schema)
    jsonschema.Draft7Validator.check_schema(checked)
    return checked


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """What the API server would refuse in ``doc`` (its apiVersion and kind pick the schema)."""
    file = SCHEMA_FILES[(doc["apiVersion"], doc["kind"])]
    validator = jsonschema.Draft7Validator(strict_schema(file))
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]
