"""The local-folder store (``file://PATH``), the embedded default.

The folder is made by the first write, never by opening or reading the store, so a
read-only command (``datasets list``) pointed at a mistyped path creates nothing. A key
whose path the file system cannot hold (``ENAMETOOLONG``) does not exist for a read and is
a one-line :class:`StoreError` for a write, as is any other failed write (full disk, no
permission, read-only mount).

Puts are write-to-temp plus rename. An exclusive create links a fully written temp file
into place (``link`` fails if the name exists), and a compare-and-swap holds an
``flock`` on a lock file beside the object while it compares and renames, so concurrent
processes on one machine never lose a write.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from datawheel.storage.base import KeyNotFoundError, StoreError
from datawheel.storage.files import atomic_write_bytes, retry_folder_race, sha256_bytes
from datawheel.storage.keys import validate_key, validate_prefix

__all__ = ["LocalStore"]

_T = TypeVar("_T")
# a path the file system cannot hold or reach: for a read, a key that cannot exist
_UNREACHABLE = frozenset({errno.ENAMETOOLONG, errno.ENOTDIR, errno.ELOOP})


class LocalStore:
    """A store in a local folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = f"file://{self.root}"
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(
                f"local store {self.root} is a file, not a folder",
                "pass --store file://PATH naming a folder (it is made on the first write)",
            )

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _write(self, key: str, write: Callable[[Path], _T]) -> _T:
        """Run ``write(path)``; a failed write is a StoreError naming the key and the cause."""
        path = self._path(key)
        try:
            return write(path)
        except OSError as exc:
            raise StoreError(
                f"cannot write {key!r} in local store {self.root}: "
                f"{exc.strerror or type(exc).__name__}",
                _write_fix(exc),
            ) from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(key, lambda path: atomic_write_bytes(path, data))

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise KeyNotFoundError(f"no object {key!r} in store {self.uri}") from exc
        except OSError as exc:
            if exc.errno in _UNREACHABLE:
                raise KeyNotFoundError(f"no object {key!r} in store {self.uri}") from exc
            raise StoreError(
                f"cannot read {key!r} in local store {self.root}: {exc.strerror}",
                "check the folder's permissions and mount",
            ) from exc

    def exists(self, key: str) -> bool:
        return _quiet(lambda: self._path(key).is_file(), False)

    def list(self, prefix: str = "") -> list[str]:
        sub = validate_prefix(prefix)
        base = self.root / sub if sub else self.root
        if not _quiet(base.is_dir, False):
            return []
        keys = []
        for p in base.rglob("*"):
            rel = p.relative_to(self.root)
            # '.'-segments are this store's temp and lock files (keys cannot start with '.')
            if not any(part.startswith(".") for part in rel.parts) and p.is_file():
                keys.append(rel.as_posix())
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        if _quiet(path.is_dir, False):  # a prefix of other keys, not an object: nothing to do
            return
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            if exc.errno in _UNREACHABLE:
                return  # a key that cannot exist is deleted already
            raise
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
        atomic_write_bytes(path, self.get_bytes(key), fsync=False)

    def create_bytes(self, key: str, data: bytes) -> bool:
        return self._write(key, lambda path: _create(path, data))

    def get_tagged(self, key: str) -> tuple[bytes, str]:
        data = self.get_bytes(key)
        return data, sha256_bytes(data)

    def replace_bytes(self, key: str, data: bytes, tag: str) -> bool:
        return self._write(key, lambda path: self._replace(path, data, tag))

    def _replace(self, path: Path, data: bytes, tag: str) -> bool:
        with self._locked(path):
            try:
                current = path.read_bytes()
            except FileNotFoundError:
                return False
            if sha256_bytes(current) != tag:
                return False
            atomic_write_bytes(path, data)
        return True

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        lock = path.parent / f".lock.{path.name}"
        fd = retry_folder_race(path.parent, lambda: os.open(lock, os.O_RDWR | os.O_CREAT, 0o666))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def _create(path: Path, data: bytes) -> bool:
    tmp = path.parent / f".create-{os.getpid()}-{os.urandom(6).hex()}.{path.name}"
    atomic_write_bytes(tmp, data)
    try:
        os.link(tmp, path)  # atomic, and fails if the name exists: an exclusive create
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _quiet(check: Callable[[], bool], default: bool) -> bool:
    """``check()``, or ``default`` where the path cannot exist (too long, not a folder)."""
    try:
        return check()
    except OSError as exc:
        if exc.errno in _UNREACHABLE:
            return default
        raise


def _write_fix(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return "free disk space (or raise the quota) where the store is, then run it again"
    if exc.errno == errno.ENAMETOOLONG:
        return "use a shorter dataset or model name"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "pass --store file://PATH with a folder you may write (or fix its permissions)"
    return "check the store folder, its disk and its permissions"
