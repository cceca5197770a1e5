"""The local-folder store (``file://PATH``), the embedded default.

Puts are write-to-temp plus rename. An exclusive create links a fully written temp file
into place (``link`` fails if the name exists), and a compare-and-swap holds an
``flock`` on a lock file beside the object while it compares and renames, so concurrent
processes on one machine never lose a write.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from datawheel.storage.base import KeyNotFoundError, StoreError
from datawheel.storage.files import atomic_write_bytes, retry_folder_race, sha256_bytes
from datawheel.storage.keys import validate_key, validate_prefix

__all__ = ["LocalStore"]


class LocalStore:
    """A store in a local folder."""

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
        atomic_write_bytes(self._path(key), data)

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise KeyNotFoundError(f"no object {key!r} in store {self.uri}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        sub = validate_prefix(prefix)
        base = self.root / sub if sub else self.root
        if not base.is_dir():
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
        atomic_write_bytes(path, self.get_bytes(key), fsync=False)

    def create_bytes(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        tmp = path.parent / f".create-{os.getpid()}-{os.urandom(6).hex()}.{path.name}"
        atomic_write_bytes(tmp, data)
        try:
            os.link(tmp, path)  # atomic, and fails if the name exists: an exclusive create
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def get_tagged(self, key: str) -> tuple[bytes, str]:
        data = self.get_bytes(key)
        return data, sha256_bytes(data)

    def replace_bytes(self, key: str, data: bytes, tag: str) -> bool:
        path = self._path(key)
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
