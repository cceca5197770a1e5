"""The Store seam: every dataset, model and ledger byte goes through it.

Two implementations share one contract: :class:`LocalStore` (``file://``, the
embedded default ``./.datawheel``) and :class:`datawheel.s3.S3Store`
(``s3://bucket/prefix`` through the ``minio`` SDK). Every ``put`` is atomic: a
reader sees the whole old object or the whole new one, never half of either.
Multi-object writes (a dataset or model version) are made atomic one level up
by writing a commit marker last (see :mod:`datawheel.datasets`).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

from datawheel.errors import DatawheelError

__all__ = [
    "DEFAULT_STORE_URI",
    "KeyNotFoundError",
    "LocalStore",
    "Store",
    "StoreError",
    "delete_quietly",
    "get_json",
    "open_store",
    "put_json",
    "validate_key",
    "validate_name",
]

DEFAULT_STORE_URI = "file://.datawheel"
_UMASK = os.umask(0)
os.umask(_UMASK)


class StoreError(DatawheelError):
    """The store could not be reached or refused an operation."""


class KeyNotFoundError(StoreError):
    """A key that was asked for does not exist."""


@runtime_checkable
class Store(Protocol):
    """A flat key/value object store with ``/``-separated keys."""

    uri: str

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]:
        """All keys under ``prefix`` (recursively), sorted."""
        ...

    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing key is not an error."""
        ...

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None: ...

    def get_file(self, key: str, path: str | os.PathLike[str]) -> None: ...


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise :class:`StoreError`."""
    if not isinstance(key, str) or not key:
        raise StoreError("store key is empty", "pass a relative key such as 'datasets/x'")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise StoreError(
            f"store key {key!r} is absolute or has a forbidden character",
            "use a relative key with '/' separators",
        )
    # Split by hand: PurePosixPath drops "." segments, which let "a/./b" and "./x" through.
    parts = key.split("/")
    if any(p in ("..", ".") for p in parts) or key.endswith("/") or "//" in key:
        raise StoreError(
            f"store key {key!r} has an empty, '.' or '..' segment",
            "keys must not climb out of the store; remove '..' and empty segments",
        )
    return key


_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def validate_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it can be one key segment (a dataset or model name), else raise."""
    if not _NAME_RE.match(name):
        raise DatawheelError(
            f"{what} {name!r} is not valid",
            "use 1-63 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit",
        )
    return name


def _validate_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    return validate_key(prefix) if prefix else ""


class LocalStore:
    """A store in a local folder; atomic puts through write-to-temp + rename."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = f"file://{self.root}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create local store folder {self.root}: {exc.strerror}",
                "pass --store file://PATH with a writable folder",
            ) from exc

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix="." + path.name)
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide objects from other users
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise KeyNotFoundError(f"no object {key!r} in store {self.uri}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = self.root / _validate_prefix(prefix) if prefix.strip("/") else self.root
        if not base.is_dir():
            return []
        keys = [
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        ]
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():  # a prefix of other keys, not an object: nothing to delete
            return
        path.unlink(missing_ok=True)
        # Prune now-empty parent folders so listings stay clean.
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        self.put_bytes(key, Path(path).read_bytes())

    def get_file(self, key: str, path: str | os.PathLike[str]) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(self.get_bytes(key))


def open_store(uri: str | None = None) -> Store:
    """Open the store named by ``uri`` (default: ``$DATAWHEEL_STORE`` or ``./.datawheel``).

    ``file://PATH`` (or a bare path) opens a :class:`LocalStore`; ``s3://bucket/prefix``
    opens an S3 store whose endpoint and credentials come from the environment
    (see :class:`datawheel.settings.S3Settings`).
    """
    uri = uri or os.environ.get("DATAWHEEL_STORE") or DEFAULT_STORE_URI
    if uri.startswith("s3://"):
        from datawheel.s3 import S3Store

        return S3Store.from_uri(uri)
    if uri.startswith("file://"):
        return LocalStore(uri[len("file://") :] or ".")
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        raise StoreError(
            f"unknown store scheme {scheme!r} in {uri!r}",
            "use file://PATH for a local folder or s3://BUCKET/PREFIX for S3/MinIO",
        )
    return LocalStore(uri)


def put_json(store: Store, key: str, obj: object) -> None:
    """Write ``obj`` as pretty, key-sorted JSON (atomic, like every put)."""
    import json

    store.put_bytes(key, json.dumps(obj, indent=2, sort_keys=True).encode())


def get_json(store: Store, key: str) -> object:
    """Read a JSON object written by :func:`put_json`."""
    import json

    return json.loads(store.get_bytes(key))


def delete_quietly(store: Store, keys: list[str]) -> None:
    """Best-effort cleanup after a failed multi-object write; never raises."""
    import contextlib

    for key in keys:
        with contextlib.suppress(Exception):
            store.delete(key)
