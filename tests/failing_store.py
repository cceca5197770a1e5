"""A store wrapper that injects a write failure, to test cleanup after a failed write."""

from __future__ import annotations

import os
from pathlib import Path

from datawheel.storage import Store


class FailingStore:
    """Delegates to a real store, but every write of a key ending in ``fail_suffix`` fails."""

    def __init__(self, inner: Store, fail_suffix: str) -> None:
        self.inner = inner
        self.fail_suffix = fail_suffix
        self.uri = inner.uri

    def put_bytes(self, key: str, data: bytes) -> None:
        if key.endswith(self.fail_suffix):
            raise OSError(f"injected failure writing {key}")
        self.inner.put_bytes(key, data)

    def get_bytes(self, key: str) -> bytes:
        return self.inner.get_bytes(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str = "") -> list[str]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        self.put_bytes(key, Path(path).read_bytes())

    def get_file(self, key: str, path: str | os.PathLike[str]) -> None:
        self.inner.get_file(key, path)

    def create_bytes(self, key: str, data: bytes) -> bool:
        if key.endswith(self.fail_suffix):
            raise OSError(f"injected failure creating {key}")
        return self.inner.create_bytes(key, data)

    def get_tagged(self, key: str) -> tuple[bytes, str]:
        return self.inner.get_tagged(key)

    def replace_bytes(self, key: str, data: bytes, tag: str) -> bool:
        if key.endswith(self.fail_suffix):
            raise OSError(f"injected failure replacing {key}")
        return self.inner.replace_bytes(key, data, tag)
