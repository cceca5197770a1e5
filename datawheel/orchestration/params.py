"""Pipeline parameters from ``--param k=v`` strings, typed by the pipeline's own signature."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from datawheel.errors import DatawheelError, name_list

__all__ = ["defaults", "parse_params"]

_CASTS = {
    "STRING": str,
    "NUMBER_INTEGER": int,
    "NUMBER_DOUBLE": float,
    "BOOLEAN": bool,
    "String": str,
    "Integer": int,
    "Float": float,
    "Double": float,
    "Boolean": bool,
}


def _inputs(pipeline: Any) -> dict[str, Any]:
    return dict(pipeline.component_spec.inputs or {})


def defaults(pipeline: Any) -> dict[str, Any]:
    """The pipeline's parameters and their default values."""
    return {name: spec.default for name, spec in _inputs(pipeline).items()}


_KINDS = {int: ("an integer", 5), float: ("a number", 0.01), str: ("a string", "x")}


def _cast(name: str, kind: str, raw: str, default: Any = None) -> Any:
    cast = _CASTS.get(kind, str)
    if cast is bool:
        low = raw.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise DatawheelError(
            f"parameter {name}={raw!r} is not a boolean",
            f"pass e.g. --param {name}=true (or false)",
        )
    try:
        return cast(raw)
    except ValueError as exc:
        what, example = _KINDS.get(cast, (f"a {cast.__name__}", "VALUE"))
        if isinstance(default, cast) and not isinstance(default, bool):
            example = default  # the pipeline's own default is the most telling example
        raise DatawheelError(
            f"parameter {name}={raw!r} is not {what}", f"pass e.g. --param {name}={example}"
        ) from exc


def parse_params(pipeline: Any, pairs: Iterable[str]) -> dict[str, Any]:
    """``["epochs=5", "model_kind=cnn"]`` -> ``{"epochs": 5, "model_kind": "cnn"}``."""
    inputs = _inputs(pipeline)
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise DatawheelError(
                f"--param {pair!r} is not KEY=VALUE", "write e.g. --param epochs=5"
            )
        key, raw = pair.split("=", 1)
        key = key.strip()
        if key not in inputs:
            raise DatawheelError(
                f"unknown parameter {key!r}",
                f"use one of: {name_list(sorted(inputs), limit=len(inputs))}",
            )
        out[key] = _cast(key, str(inputs[key].type), raw, inputs[key].default)
    return out
