"""The HTML evaluation report: real PNG plots embedded, decision and metrics shown."""

from __future__ import annotations

import base64
import re

from datawheel.evaluation.report import confusion_png, evaluation_html, training_curves_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plots_are_pngs() -> None:
    history = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_accuracy": 1 - 1 / (e + 1)}
        for e in range(1, 6)
    ]
    assert training_curves_png(history).startswith(PNG_MAGIC)
    assert confusion_png(["a", "b"], [[3, 1], [0, 4]]).startswith(PNG_MAGIC)


def test_page_has_decision_metrics_and_both_plots() -> None:
    page = evaluation_html(
        model="digits",
        dataset="digits@abc",
        decision="reject",
        reason="not better <enough>",
        metrics={"accuracy": 0.9312, "macro_f1": 0.9},
        history=[
            {"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "val_accuracy": 0.5},
            {"epoch": 2, "train_loss": 0.5, "val_loss": 0.6, "val_accuracy": 0.8},
        ],
        classes=["x", "y", "z"],
        confusion=[[1, 0, 0], [0, 2, 1], [0, 0, 3]],
    )
    assert '<span class="reject">reject</span>' in page
    assert "<td>accuracy</td><td>0.9312</td>" in page
    assert "not better &lt;enough&gt;" in page  # escaped
    images = re.findall(r"base64,([A-Za-z0-9+/=]+)", page)
    assert len(images) == 2
    assert all(base64.b64decode(i).startswith(PNG_MAGIC) for i in images)
