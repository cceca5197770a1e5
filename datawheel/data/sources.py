"""Read a raw source into a DataFrame: built-in digits, CSV/Parquet, or an image folder.

Every loader returns a :class:`Loaded` whose frame has float32 numeric feature columns,
text categorical ones (:mod:`datawheel.data.categorical`) and one label column, plus the
image shape when the features are pixels.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from datawheel.data.categorical import categorize
from datawheel.errors import DatawheelError, name_list

__all__ = ["BUILTIN_SOURCES", "IMAGE_SUFFIXES", "Loaded", "load_source"]

BUILTIN_SOURCES = ("digits",)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass(frozen=True)
class Loaded:
    """A source read into memory, before it becomes a dataset version."""

    frame: pd.DataFrame
    label: str
    source: str
    image_shape: tuple[int, int, int] | None = None
    categorical: tuple[str, ...] = ()  # the categorical feature columns


def load_source(source: str, *, label: str = "label", image_size: int = 16) -> Loaded:
    """Load ``source``: ``digits``; a CSV/Parquet path or ``file://``, ``s3://``, ``http(s)://``
    URI; or an image folder with one subfolder per class."""
    if not source:
        raise DatawheelError("no source given", "pass --param source=digits or a CSV/Parquet path")
    if source in BUILTIN_SOURCES or source == "builtin:digits":
        return _load_digits()
    if source.startswith("s3://"):
        return _load_table_bytes(_read_s3(source), source, label)
    if source.startswith(("http://", "https://")):
        from datawheel.data.http_source import display_url, read_http

        return _load_table_bytes(read_http(source), display_url(source), label, remote=True)
    path = Path(source[len("file://") :] if source.startswith("file://") else source).expanduser()
    if path.is_dir():
        return _load_image_folder(path, image_size)
    if not path.exists():
        raise DatawheelError(
            f"source {source!r} does not exist",
            "pass an existing CSV/Parquet file, an image folder, or 'digits'",
        )
    if path.suffix.lower() not in _TABLE_SUFFIXES:
        raise DatawheelError(
            f"source {source!r} has unsupported type {path.suffix or '(none)'!r}",
            "use a .csv or .parquet file, an image folder (one subfolder per class) or 'digits'",
        )
    return _load_table_bytes(path.read_bytes(), str(path), label)


def _load_digits() -> Loaded:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    data = np.asarray(bunch.data, dtype=np.float32) / 16.0
    frame = pd.DataFrame(data, columns=[f"px_{i}" for i in range(data.shape[1])])
    frame["label"] = np.asarray(bunch.target).astype(str)
    return Loaded(frame=frame, label="label", source="builtin:digits", image_shape=(1, 8, 8))


def _read_s3(uri: str) -> bytes:
    from datawheel.storage.s3 import S3Store

    bucket_and_key = uri[len("s3://") :]
    if "/" not in bucket_and_key:
        raise DatawheelError(f"S3 source {uri!r} names no object", "use s3://BUCKET/KEY.csv")
    bucket, key = bucket_and_key.split("/", 1)
    return S3Store.from_uri(f"s3://{bucket}").get_bytes(key)


def _load_table_bytes(data: bytes, source: str, label: str, *, remote: bool = False) -> Loaded:
    """Parse a CSV/Parquet file. ``remote``: what a server sent, so no error quotes any of it
    (not a parser message, not a column name): a URL that answers with a secret cannot have
    it printed."""
    is_parquet = source.lower().endswith((".parquet", ".pq")) or data[:4] == b"PAR1"
    try:
        frame = pd.read_parquet(io.BytesIO(data)) if is_parquet else pd.read_csv(io.BytesIO(data))
    except pd.errors.EmptyDataError as exc:
        raise DatawheelError(
            f"source {source!r} is empty", "pass a file with a header and rows"
        ) from exc
    except Exception as exc:  # pandas/pyarrow raise many parser types
        kind = "Parquet" if is_parquet else "CSV"
        why = "" if remote else f": {str(exc).splitlines()[0]}"
        raise DatawheelError(
            f"cannot parse {source!r} as {kind}{why}", f"check that the file is valid {kind}"
        ) from None if remote else exc
    _refuse_duplicates(data, frame, source, is_parquet, remote)
    if label not in frame.columns:
        names = [str(c) for c in frame.columns]
        shown = f"{len(names)} columns" if remote else f"columns: {name_list(names)}"
        raise DatawheelError(
            f"source {source!r} has no label column {label!r} ({shown})",
            "name the label column with --param label=COLUMN",
        )
    features = [c for c in frame.columns if c != label]
    if not features:
        raise DatawheelError(f"source {source!r} has no feature columns", "add feature columns")
    frame = frame.reset_index(drop=True)
    categorical = categorize(frame, features)
    frame[label] = frame[label].astype(str)
    return Loaded(frame, label, source, None, tuple(categorical))


def _header(data: bytes) -> list[str]:
    """The column names of a CSV's first line, as written (pandas renames duplicates)."""
    import csv

    first = data.split(b"\n", 1)[0].decode("utf-8-sig", "replace").rstrip("\r")
    return next(csv.reader([first]), [])


def _refuse_duplicates(
    data: bytes, frame: pd.DataFrame, source: str, is_parquet: bool, remote: bool
) -> None:
    names = [str(c) for c in frame.columns] if is_parquet else _header(data)
    twice = sorted(n for n, count in Counter(names).items() if count > 1)
    if twice:
        which = f"{len(twice)} names" if remote else name_list(twice)
        raise DatawheelError(
            f"source {source!r} has more than one column named {which}",
            "give every column its own name in the header",
        )


def _load_image_folder(root: Path, size: int) -> Loaded:
    from datawheel.data.image_decode import (
        GRAY_MODES,
        ImageError,
        Preprocessing,
        image_row,
        open_image,
    )

    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatawheelError(
            f"image folder {str(root)!r} has no class subfolders",
            "put images in one subfolder per class, e.g. cats/1.png, dogs/2.png",
        )
    files = [
        (cls, f)
        for cls in classes
        for f in sorted((root / cls).rglob("*"))
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise DatawheelError(f"image folder {str(root)!r} has no images", "add .png/.jpg files")
    images = []
    for _, f in files:
        try:
            images.append(open_image(f))
        except ImageError as exc:
            raise DatawheelError(f"cannot read image: {exc}", "remove or replace the file") from exc
    color = any(im.mode not in GRAY_MODES for im in images)
    prep = Preprocessing("RGB" if color else "L", size, size)
    pixels = np.stack([image_row(im, prep) for im in images])
    frame = pd.DataFrame(pixels, columns=[f"px_{i}" for i in range(pixels.shape[1])])
    frame["label"] = [cls for cls, _ in files]
    shape = (prep.channels, size, size)
    return Loaded(frame=frame, label="label", source=str(root), image_shape=shape)
