"""What a drift comparison reads: dataset versions, CSV/Parquet files, a model's reference and
its ledger window, each as a :class:`Sample` with the feature columns checked.

* ``NAME@VERSION`` (``@latest`` works): a committed dataset version in the store; its label
  column (from the manifest) is not a feature, its values are the sample's labels.
* A CSV or Parquet path, ``file://``, ``s3://BUCKET/KEY`` or ``http(s)://`` URI: every
  column is a feature except the one named by ``label``. A local Parquet file used as the
  current sample is streamed row group by row group (bounded memory); anything else is read
  into memory.
* ``model_reference``: a registered model's ``drift_reference.json`` (exported with it),
  else the train split of its dataset version rebuilt as the server does
  (:func:`datawheel.serving.drift_baseline.served_reference`).
* ``ledger_window``: the model version's served rows (``inputs``, predicted labels) and the
  feedback labels of the last ``since`` seconds, from the prediction ledger.
"""

from __future__ import annotations

import io
import re
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datawheel.errors import DatawheelError
from datawheel.monitoring.baseline import REFERENCE_FILE, DriftReference
from datawheel.storage import Store

__all__ = [
    "Sample",
    "check_features",
    "ledger_sample",
    "ledger_window",
    "load_sample",
    "model_reference",
    "parse_since",
    "utc_days",
]

_DATASET_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*@[A-Za-z0-9._-]+$")
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass(frozen=True)
class Sample:
    """One side of a comparison, with its feature columns."""

    name: str  # what a person is shown: NAME@VERSION, a path, model:vN, a window
    data: pd.DataFrame | Path | DriftReference  # rows, a Parquet file to stream, a summary
    features: list[str]
    labels: list[str] | None = None  # label column (datasets, files) or feedback labels
    predictions: list[str] | None = None  # predicted classes (ledger windows)
    notes: list[str] = field(default_factory=list)
    label_column: str = ""  # the column that held the labels, if any


def parse_since(text: str) -> float:
    """``90s``, ``30m``, ``24h``, ``7d``, ``2w`` -> seconds."""
    m = _SINCE.match(text or "")
    if not m or float(m.group(1)) <= 0:
        raise DatawheelError(
            f"--since {text!r} is not a duration", "use a number and a unit: 30m, 24h, 7d"
        )
    return float(m.group(1)) * _UNITS[m.group(2)]


def _is_dataset_ref(spec: str) -> bool:
    return bool(_DATASET_REF.match(spec)) and not Path(spec).exists() and "://" not in spec


def _read_remote(uri: str) -> bytes:
    # the same readers ingest uses, so s3:// and http(s):// behave (and fail) the same way
    from datawheel.data.http_source import read_http
    from datawheel.data.sources import _read_s3

    return _read_s3(uri) if uri.startswith("s3://") else read_http(uri)


def _parse_table(data: bytes, source: str, name: str) -> pd.DataFrame:
    parquet = source.lower().endswith((".parquet", ".pq")) or data[:4] == b"PAR1"
    try:
        frame = pd.read_parquet(io.BytesIO(data)) if parquet else pd.read_csv(io.BytesIO(data))
    except pd.errors.EmptyDataError:
        raise DatawheelError(f"{source} is empty", "pass a file with a header and rows") from None
    except Exception as exc:  # pandas and pyarrow raise many parser types
        kind = "Parquet" if parquet else "CSV"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DatawheelError(
            f"cannot read {source} as {kind}: {first}", f"check that the file is valid {kind}"
        ) from None
    if frame.empty:
        raise _no_rows(name)
    return frame


def _parquet_columns(path: Path) -> tuple[list[str], int]:
    """A Parquet file's column names and row count, from its footer."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
        return [str(n) for n in meta.schema.to_arrow_schema().names], int(meta.num_rows)
    except Exception as exc:  # pyarrow.ArrowInvalid and friends
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DatawheelError(
            f"cannot read {path} as Parquet: {first}", "check that the file is valid Parquet"
        ) from None


def _no_rows(name: str) -> DatawheelError:
    return DatawheelError(
        f"{name} has no rows (0 rows to compare)", "pass a sample with at least one row"
    )


def _split_label(frame: pd.DataFrame, label: str) -> tuple[pd.DataFrame, list[str] | None]:
    if label and label in frame.columns:
        labels = frame[label].astype(str).tolist()
        return frame.drop(columns=[label]), labels
    return frame, None


def load_sample(
    spec: str, store: str | None = None, *, label: str = "", stream: bool = False
) -> Sample:
    """``spec`` (a dataset ref in ``store``, default ``$DATAWHEEL_STORE``; a file; a URI)
    as a :class:`Sample`; ``label`` names the column that is not a feature. ``stream``: a
    local Parquet file stays on disk, to be streamed."""
    if not spec:
        raise DatawheelError("no sample given", "pass a dataset NAME@VERSION or a CSV/Parquet file")
    if _is_dataset_ref(spec):
        return _dataset_sample(spec, store)
    if spec.startswith(("s3://", "http://", "https://")):
        from datawheel.data.http_source import display_url

        shown = display_url(spec) if spec.startswith(("http://", "https://")) else spec
        frame, labels = _split_label(_parse_table(_read_remote(spec), shown, shown), label)
        found = label if labels is not None else ""
        return Sample(spec, frame, [str(c) for c in frame.columns], labels, label_column=found)
    path = Path(spec.removeprefix("file://")).expanduser()
    if not path.exists():
        raise DatawheelError(
            f"{spec} does not exist (and is not a dataset NAME@VERSION)",
            "pass an existing CSV/Parquet file, or a dataset ref such as digits@latest",
        )
    if path.is_dir() or path.suffix.lower() not in _TABLE_SUFFIXES:
        raise DatawheelError(f"{spec} is not a CSV or Parquet file", "pass a .csv or .parquet file")
    if stream and path.suffix.lower() in (".parquet", ".pq"):
        columns, rows = _parquet_columns(path)
        if rows == 0:
            raise _no_rows(str(path))
        labels = None
        if label and label in columns:
            import pyarrow.parquet as pq

            labels = [str(v) for v in pq.read_table(path, columns=[label]).column(0).to_pylist()]
        features = [c for c in columns if c != label]
        return Sample(str(path), path, features, labels, label_column=label if labels else "")
    frame, labels = _split_label(_parse_table(path.read_bytes(), str(path), spec), label)
    found = label if labels is not None else ""
    return Sample(str(path), frame, [str(c) for c in frame.columns], labels, label_column=found)


def _dataset_sample(spec: str, store_uri: str | None) -> Sample:
    from datawheel.data import versions
    from datawheel.storage import open_store

    store = open_store(store_uri)
    name, version = spec.split("@", 1)
    dv = versions.get_version(store, name, version)
    frame = versions.read_frame(store, dv)
    labels = frame[dv.label].astype(str).tolist() if dv.label in frame.columns else None
    features = dv.features
    return Sample(
        f"{dv.name}@{dv.version}", frame[features], features, labels, label_column=dv.label
    )


def check_features(reference: Sample, current: Sample) -> list[str]:
    """The reference's features, after checking that the current sample has exactly them."""
    ref, cur = reference.features, set(current.features)
    missing = [f for f in ref if f not in cur]
    extra = sorted(cur - set(ref))
    if not ref:
        raise DatawheelError(
            f"{reference.name} has no feature columns", "pass a sample with features"
        )
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"lacks {len(missing)} reference feature(s): {', '.join(missing[:5])}")
        if extra:
            parts.append(
                f"has {len(extra)} column(s) the reference does not: {', '.join(extra[:5])}"
            )
        raise DatawheelError(
            f"the feature columns do not match: {current.name} " + "; ".join(parts),
            "compare samples with the same feature columns, and name a label column with "
            "--label so that it is not taken for a feature",
        )
    return list(ref)


def model_reference(store: Store, ref: str) -> tuple[Sample, Any]:
    """The reference of model ``ref`` (NAME, NAME@alias, NAME:vN) and its ModelVersion."""
    from datawheel import registry
    from datawheel.data.transform import Transform

    name, which = registry.parse_ref(ref)
    mv = registry.resolve(store, name, which)
    files = set(mv.card.get("files", {}))
    with tempfile.TemporaryDirectory(prefix="datawheel-drift-") as tmp:
        folder = Path(tmp)
        registry.fetch(store, mv, folder, only=("transform.json", REFERENCE_FILE))
        transform = Transform.load(folder / "transform.json")
        if REFERENCE_FILE in files:
            found = DriftReference.load(folder / REFERENCE_FILE)
            note = f"{REFERENCE_FILE} of {mv.name}:{mv.version}"
        else:
            found, note = _rebuilt(store, mv, folder, transform)
    title = f"{mv.name}:{mv.version} train split"
    return Sample(title, found, list(found.names), notes=[f"reference: {note}"]), mv


def _rebuilt(store: Store, mv: Any, folder: Path, transform: Any) -> tuple[DriftReference, str]:
    """A version exported without drift_reference.json: rebuilt from its dataset as the
    server does, with the model's predictions on the rebuilt test split."""
    from datawheel import registry
    from datawheel.serving.drift_baseline import served_reference

    def predict(rows: np.ndarray) -> np.ndarray:
        import torch

        from datawheel.training.export import load_exported

        registry.fetch(store, mv, folder, only=("model.ts",))
        module = load_exported(folder / "model.ts")
        with torch.inference_mode():
            return np.asarray(module(torch.from_numpy(np.asarray(rows, np.float32))).numpy())

    found = served_reference(store, mv, folder, transform, predict)
    if found.reference is None:
        raise DatawheelError(
            f"model {mv.name}:{mv.version} has no drift reference ({found.note})",
            "re-run the training pipeline so the version is exported with drift_reference.json",
        )
    return found.reference, found.note


def utc_days(start: float, end: float) -> list[str]:
    """The UTC dates (``YYYY-MM-DD``, the ledger's partitions) from ``start`` to ``end``."""
    day = datetime.fromtimestamp(start, UTC).date()
    last = datetime.fromtimestamp(end, UTC).date()
    out = []
    while day <= last:
        out.append(day.isoformat())
        day += timedelta(days=1)
    return out


def ledger_window(
    store: Store,
    mv: Any,
    features: list[str],
    since_s: float,
    *,
    now: float | None = None,
    span: str = "",
) -> Sample:
    """The rows version ``mv`` served in the last ``since_s`` seconds (``span``: how a
    person wrote it), with its predicted labels and the feedback labels given in the
    window for its predictions (the latest label per prediction)."""
    span = span.strip() or _span(since_s)
    end = time.time() if now is None else now
    return ledger_sample(
        store,
        mv.name,
        mv.version,
        features,
        end - since_s,
        where=f"last {span}",
        fix="widen --since, or check that a server is serving this version (records reach "
        "the ledger within seconds of being served)",
        now=end,
    )


def ledger_sample(
    store: Store,
    model: str,
    version: str,
    features: list[str],
    start: float,
    *,
    where: str,
    fix: str,
    until: float | None = None,
    now: float | None = None,
) -> Sample:
    """What ``model:version`` served from ``start`` (to ``until``, if given), with its
    predicted labels and the latest feedback label per prediction given in that window.
    ``where`` names the window (``last 1h``), ``fix`` what to do when it is empty."""
    from datawheel.serving.ledger import read_ledger

    end = until if until is not None else (time.time() if now is None else now)
    days = utc_days(start, end)

    def within(frame: pd.DataFrame) -> pd.Series:
        keep = (frame["ts"] >= start) & (frame["version"] == version)
        return keep & (frame["ts"] < until) if until is not None else keep

    cols = ("ts", "version", "inputs", "label")
    parts = [read_ledger(store, model=model, date=d, columns=cols) for d in days]
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    rows = rows[within(rows)]
    if rows.empty:
        raise DatawheelError(
            f"the ledger has no predictions of {model}:{version} in the {where} "
            "(0 rows to compare)",
            fix,
        )
    widths = {len(v) for v in rows["inputs"]}
    if widths != {len(features)}:
        raise DatawheelError(
            f"the ledger rows of {model}:{version} have {sorted(widths)} values, the "
            f"reference {len(features)} features",
            "compare the version that served these rows (NAME:vN)",
        )
    frame = pd.DataFrame(np.vstack(list(rows["inputs"])), columns=features)
    feedback = [read_ledger(store, model=model, kind="feedback", date=d) for d in days]
    fb = pd.concat(feedback, ignore_index=True) if feedback else pd.DataFrame()
    labels = None
    if not fb.empty:
        latest = fb[within(fb)].sort_values("ts").drop_duplicates("id", keep="last")
        labels = latest["label"].astype(str).tolist() or None
    window = f"{model}:{version} ledger, {where}"
    return Sample(window, frame, features, labels, rows["label"].astype(str).tolist())


def _span(seconds: float) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
