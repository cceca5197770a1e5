"""The model registry: versions with a card each (catalog), and aliases that point at them.

``from datawheel import registry`` gives the whole API: ``register``, ``list_versions``,
``resolve``, ``fetch``, ``promote``, ``rollback``, ``get_alias``, ``parse_ref``.
"""

from datawheel.registry.aliases import (
    ALIASES,
    ANY,
    AliasMovedError,
    get_alias,
    parse_ref,
    promote,
    resolve,
    rollback,
)
from datawheel.registry.catalog import (
    ChecksumError,
    ModelVersion,
    code_version,
    fetch,
    find_version,
    list_models,
    list_versions,
    read_card,
    register,
)
from datawheel.registry.parsing import CorruptRecordError

__all__ = [
    "ALIASES",
    "ANY",
    "AliasMovedError",
    "ChecksumError",
    "CorruptRecordError",
    "ModelVersion",
    "code_version",
    "fetch",
    "find_version",
    "get_alias",
    "list_models",
    "list_versions",
    "parse_ref",
    "promote",
    "read_card",
    "register",
    "resolve",
    "rollback",
]
