"""Local file primitives every stage shares: content hashes and atomic writes.

One SHA-256 helper and one atomic-write helper for the whole package, so a dataset's
content address, a model card's checksums and a checkpoint are written and checked the
same way.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO, TypeVar

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "retry_folder_race",
    "sha256_bytes",
    "sha256_file",
]

_T = TypeVar("_T")
_FOLDER_RACE_TRIES = 50
_UMASK = os.umask(0)
os.umask(_UMASK)


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[BinaryIO], object], *, fsync: bool = True
) -> None:
    """Write ``path`` through ``write(fh)`` into a temp file beside it, then rename it in.

    A reader sees the whole old file or the whole new one, never a torn one; a failed
    write leaves no temp file behind. The file gets the usual umask permissions (not
    mkstemp's 0600), so other users of a shared store can read it.
    """
    target = Path(path)
    fd, tmp = _temp_beside(target)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _temp_beside(target: Path) -> tuple[int, str]:
    """A temp file in ``target``'s folder, creating the folder.

    A concurrent delete may prune the folder (LocalStore removes folders it leaves empty)
    between making it and creating the file, so that race is retried; once the temp file
    exists the folder is not empty and stays.
    """
    return retry_folder_race(
        target.parent,
        lambda: tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix="." + target.name),
    )


def retry_folder_race(folder: Path, create: Callable[[], _T]) -> _T:
    """``create()`` a file in ``folder`` (made first), retrying while a concurrent prune
    removes the folder under it."""
    for attempt in range(_FOLDER_RACE_TRIES):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return create()
        except (FileNotFoundError, FileExistsError):
            # FileNotFoundError: pruned before create. FileExistsError: pathlib's mkdir saw
            # the folder exist, then found it gone when it checked it was a folder.
            if attempt == _FOLDER_RACE_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> None:
    """:func:`atomic_write` of a byte string."""
    atomic_write(path, lambda fh: fh.write(data), fsync=fsync)
