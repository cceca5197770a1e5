"""The demo's production traffic: digits written with thicker strokes, sent to a real server,
and simulated users who correct some of the answers through the feedback API.

The champion learned the built-in digits (thin pen strokes). Production then sees the same
digits drawn with a thicker pen (each pixel takes the brightest of itself and its four
neighbours): a shift a person can picture, and one the training data never covered. The
images are split in two disjoint pools by index, so the traffic after retraining is made of
images neither model was trained on.
"""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Wave", "send_wave", "shifted_pools", "thicker_strokes"]


def thicker_strokes(x: np.ndarray, side: int = 8) -> np.ndarray:
    """Rows of ``side`` x ``side`` images in [0, 1] drawn with a thicker pen: a cross-shaped
    grey dilation (the max of each pixel and its four neighbours)."""
    img = x.reshape(-1, side, side)
    out = img.copy()
    out[:, 1:, :] = np.maximum(out[:, 1:, :], img[:, :-1, :])
    out[:, :-1, :] = np.maximum(out[:, :-1, :], img[:, 1:, :])
    out[:, :, 1:] = np.maximum(out[:, :, 1:], img[:, :, :-1])
    out[:, :, :-1] = np.maximum(out[:, :, :-1], img[:, :, 1:])
    return out.reshape(x.shape).astype(np.float32)


def shifted_pools() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Two disjoint pools (rows, labels) of thick-stroke digits: even and odd image indices."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    thin = np.asarray(bunch.data, np.float32) / 16.0
    # Each pixel stays within the brightest value it has in the thin-stroke scans: the
    # validation gate refuses values outside a feature's reference range (plus 10%), so
    # harvested rows that lit a border pixel no training image lights would be rejected.
    x = np.minimum(thicker_strokes(thin), thin.max(axis=0))
    y = np.asarray(bunch.target).astype(str)
    return (x[0::2], y[0::2]), (x[1::2], y[1::2])


@dataclass
class Wave:
    """What one wave of traffic got back."""

    sent: int = 0
    correct: int = 0
    labeled: int = 0
    confirmed: int = 0
    versions: dict[str, int] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.correct / self.sent if self.sent else 0.0


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            out: dict[str, Any] = json.loads(r.read())
            return out
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{url} answered {exc.code}: {exc.read()[:300]!r}") from None


def send_wave(
    server: str,
    model: str,
    rows: np.ndarray,
    labels: np.ndarray,
    *,
    label_share: float,
    batch: int = 16,
    seed: int = 0,
) -> Wave:
    """Send ``rows`` to ``server``'s v2 infer endpoint in batches; a ``label_share`` of the
    answers get their true label back through the feedback endpoint, as users who correct
    (or confirm) what they were shown."""
    rng = random.Random(seed)
    wave = Wave()
    infer = f"{server}/v2/models/{model}/infer"
    feedback = f"{server}/v2/models/{model}/feedback"
    for start in range(0, len(rows), batch):
        part, truth = rows[start : start + batch], labels[start : start + batch]
        out = _post(
            infer,
            {
                "inputs": [
                    {
                        "name": "input",
                        "shape": list(part.shape),
                        "datatype": "FP32",
                        "data": part.reshape(-1).tolist(),
                    }
                ]
            },
        )
        predicted = [str(v) for v in out["outputs"][0]["data"]]
        ids = out["parameters"]["prediction_ids"]
        version = str(out.get("model_version", "?"))
        wave.versions[version] = wave.versions.get(version, 0) + len(ids)
        for pid, guess, true in zip(ids, predicted, truth.tolist(), strict=True):
            wave.sent += 1
            wave.correct += guess == true
            if rng.random() < label_share:
                _post(feedback, {"id": pid, "label": true})
                wave.labeled += 1
                wave.confirmed += guess == true
    return wave
