"""The first module of a network whose rows hold categorical codes: one-hot or embeddings.

A categorical feature's column holds its code, ``0`` ("other": missing or unseen) up to
``k`` (its ``k`` training categories; see :mod:`datawheel.data.categorical`). The
:class:`CategoricalEncoder` keeps the numeric columns as they are and replaces each code by
a one-hot vector of ``k + 1`` values when ``k`` is at most :data:`ONE_HOT_MAX`, else by a
learned embedding of :func:`embedding_dim` values. A code that is not an integer in
``0..k`` (a client's mistake) counts as "other". It is plain tensor maths, so it scripts
with TorchScript and exports with torch.export like the layers after it.
"""

# No ``from __future__ import annotations``: TorchScript resolves these annotations.
import torch
from torch import Tensor, nn

__all__ = ["ONE_HOT_MAX", "CategoricalEncoder", "embedding_dim"]

ONE_HOT_MAX = 16  # up to this many categories a feature is one-hot; above, an embedding


def embedding_dim(k: int) -> int:
    """The embedding width of a feature with ``k`` categories (fast.ai's rule, capped at 32)."""
    return int(min(32, max(2, round(1.6 * (k + 1) ** 0.56))))


def _valid(codes: Tensor, k: int) -> Tensor:
    """``codes`` with anything but an integer in ``0..k`` as 0 ("other")."""
    ok = (codes >= 0) & (codes <= float(k)) & (codes == torch.floor(codes))
    return torch.where(ok, codes, torch.zeros_like(codes))


class _OneHot(nn.Module):
    """Codes ``[N]`` of a feature with ``k`` categories -> one-hot ``[N, k + 1]``."""

    levels: Tensor

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.register_buffer("levels", torch.arange(k + 1, dtype=torch.float32))

    def forward(self, codes: Tensor) -> Tensor:
        codes = _valid(codes, self.k)
        return (codes.unsqueeze(1) == self.levels.unsqueeze(0)).to(codes.dtype)


class _Embedded(nn.Module):
    """Codes ``[N]`` of a feature with ``k`` categories -> learned vectors ``[N, dim]``."""

    def __init__(self, k: int, dim: int) -> None:
        super().__init__()
        self.k = k
        self.embedding = nn.Embedding(k + 1, dim)

    def forward(self, codes: Tensor) -> Tensor:
        out: Tensor = self.embedding(_valid(codes, self.k).long())
        return out


class CategoricalEncoder(nn.Module):
    """Rows ``[N, n_features]`` -> ``[N, width]``: the numeric columns, then each categorical
    column's one-hot vector or embedding (``cardinalities``: column index -> categories)."""

    numeric_index: Tensor
    category_index: Tensor

    def __init__(self, n_features: int, cardinalities: dict[int, int]) -> None:
        super().__init__()
        cat = sorted(cardinalities)
        if any(not 0 <= i < n_features for i in cat):
            raise ValueError(f"categorical columns {cat} outside 0..{n_features - 1}")
        numeric = [i for i in range(n_features) if i not in cardinalities]
        self.register_buffer("numeric_index", torch.tensor(numeric, dtype=torch.long))
        self.register_buffer("category_index", torch.tensor(cat, dtype=torch.long))
        ks = [int(cardinalities[i]) for i in cat]
        widths = [k + 1 if k <= ONE_HOT_MAX else embedding_dim(k) for k in ks]
        self.columns = nn.ModuleList(
            _OneHot(k) if k <= ONE_HOT_MAX else _Embedded(k, w)
            for k, w in zip(ks, widths, strict=True)
        )
        self.width = len(numeric) + sum(widths)

    def forward(self, x: Tensor) -> Tensor:
        parts = [x.index_select(1, self.numeric_index)]
        codes = x.index_select(1, self.category_index)
        for j, column in enumerate(self.columns):
            parts.append(column(codes[:, j]))
        return torch.cat(parts, dim=1)
