"""The parent version's rows plus the newly labelled production rows, deduplicated by content.

Rows are compared as the model sees them: their features as canonical float32 bytes
(``-0.0`` is ``0.0``, every NaN the one quiet NaN), the same rule the split hash uses.

* A new row whose features and label are already in the parent is dropped (a duplicate);
  so are repeats within the window.
* A new row whose features are in the parent (or earlier in the window) with another
  label is a **conflict**: the newest label wins. Parent rows with those features are
  relabelled in place, so every other row keeps its position; the conflict is counted
  once per distinct feature row.
* Anything else is appended after the parent's rows, oldest label first.

The result says which rows came from production: the parent's production rows, the rows
relabelled and the rows appended. A categorical feature (text in the parent) is compared by
its code in ``vocab``; appended rows get their categories back as text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from datawheel.data.categorical import decode_column, encode_frame

__all__ = ["Merged", "content_keys", "merge_rows"]


@dataclass(frozen=True)
class Merged:
    frame: pd.DataFrame
    production: np.ndarray  # bool per row of ``frame``
    added: int  # rows appended
    relabelled: int  # parent rows whose label the newest production label replaced
    conflicts: int  # distinct feature rows that carried more than one label
    duplicates: int  # new labelled rows that changed nothing

    @property
    def changed(self) -> bool:
        return bool(self.added or self.relabelled)


def content_keys(x: np.ndarray) -> np.ndarray:
    """One opaque, exactly comparable key per row: its canonical float32 bytes."""
    canon = np.asarray(x, dtype=np.float32) + np.float32(0.0)  # a copy; -0.0 becomes 0.0
    canon[np.isnan(canon)] = np.nan
    canon = np.ascontiguousarray(canon, dtype="<f4")
    return canon.view(np.dtype((np.void, 4 * canon.shape[1]))).reshape(-1)


def merge_rows(
    parent: pd.DataFrame,
    *,
    features: list[str],
    label: str,
    parent_production: np.ndarray,
    x: np.ndarray,
    labels: np.ndarray,
    vocab: dict[str, list[str]] | None = None,
) -> Merged:
    """Merge labelled rows ``x`` (in ``features`` order, oldest label first) into ``parent``;
    ``vocab`` gives the categories that ``x``'s categorical codes index."""
    vocab = vocab or {}
    n_parent, n_new = len(parent), len(labels)
    p_labels = parent[label].astype(str).to_numpy(dtype=object)
    new_labels = np.asarray(labels, dtype=object).astype(str).astype(object)
    parent_x = encode_frame(parent, features, vocab)
    keys = np.concatenate([content_keys(parent_x), content_keys(x)])
    _, group = np.unique(keys, return_inverse=True)
    p_group, n_group = group[:n_parent], group[n_parent:]
    # The newest label of each distinct new feature row: the last one in the window.
    groups, first_reversed = np.unique(n_group[::-1], return_index=True)
    newest = n_new - 1 - first_reversed
    final = new_labels[newest]
    in_new = np.isin(p_group, groups)
    seen = pd.DataFrame(
        {
            "g": np.concatenate([p_group[in_new], n_group]),
            "label": np.concatenate([p_labels[in_new], new_labels]),
        }
    )
    conflicts = int((seen.groupby("g")["label"].nunique() > 1).sum())
    # Parent rows with those features take the newest label.
    hit = np.flatnonzero(in_new)
    wanted = final[np.searchsorted(groups, p_group[hit])]
    relabel = hit[p_labels[hit] != wanted]
    production = np.asarray(parent_production, np.bool_).copy()
    out = parent.copy()
    if len(relabel):
        values = out[label].to_numpy(dtype=object)
        values[relabel] = wanted[p_labels[hit] != wanted]
        out[label] = pd.Series(values, index=out.index, dtype=parent[label].dtype)
        production[relabel] = True
    # Feature rows the parent does not have are appended, in the order of their newest label.
    append = np.sort(newest[~np.isin(groups, p_group)])
    if len(append):
        rows = pd.DataFrame(np.asarray(x[append], np.float32), columns=features)
        rows = rows.astype({f: parent[f].dtype for f in features if f not in vocab})
        for f, cats in vocab.items():
            rows[f] = pd.Series(decode_column(rows[f].to_numpy(), cats), dtype=object)
        rows[label] = pd.Series(new_labels[append], dtype=parent[label].dtype)
        out = pd.concat([out, rows[list(parent.columns)]], ignore_index=True)
        production = np.concatenate([production, np.ones(len(append), np.bool_)])
    return Merged(
        out,
        production,
        added=len(append),
        relabelled=len(relabel),
        conflicts=conflicts,
        duplicates=_duplicates(p_group[in_new], p_labels[in_new], n_group, new_labels),
    )


def _duplicates(
    p_group: np.ndarray, p_labels: np.ndarray, n_group: np.ndarray, n_labels: np.ndarray
) -> int:
    """New rows whose features and label are already in the parent or earlier in the window."""
    new = pd.DataFrame({"g": n_group, "label": n_labels})
    distinct = new.drop_duplicates()
    old = pd.DataFrame({"g": p_group, "label": p_labels}).drop_duplicates()
    in_parent = len(distinct.merge(old, on=["g", "label"], how="inner"))
    return len(new) - len(distinct) + in_parent
