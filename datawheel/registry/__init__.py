"""The model registry: versions with a card each (catalog), and aliases that point at them.

``from datawheel import registry`` gives the whole API: ``register``, ``list_versions``,
``resolve``, ``fetch``, ``promote``, ``rollback``, ``clear``, ``get_alias``, ``parse_ref``;
and the per-model deploy settings (``read_settings``, ``write_settings``).
"""

from datawheel.registry.aliases import (
    ALIASES,
    ANY,
    AliasMovedError,
    clear,
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
from datawheel.registry.deploy_settings import DeploySettings, read_settings, write_settings
from datawheel.registry.parsing import CorruptRecordError

__all__ = [
    "ALIASES",
    "ANY",
    "AliasMovedError",
    "ChecksumError",
    "CorruptRecordError",
    "DeploySettings",
    "ModelVersion",
    "clear",
    "code_version",
    "fetch",
    "find_version",
    "get_alias",
    "list_models",
    "list_versions",
    "parse_ref",
    "promote",
    "read_card",
    "read_settings",
    "register",
    "resolve",
    "rollback",
    "write_settings",
]
