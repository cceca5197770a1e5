"""The evaluation as reports: Markdown for the KFP UI and the CLI, and one self-contained
HTML page with metrics, decision, the test slices (reference, production, combined),
training curves and the confusion matrix.

Plots are drawn with matplotlib (Agg, no display) and embedded as base64 PNGs, so the
page renders in the KFP UI's HTML viewer and opens straight from the store.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

from datawheel.evaluation.compare import describe_confidence
from datawheel.evaluation.metrics import Evaluation
from datawheel.evaluation.variant_choice import variant_rows

__all__ = [
    "confusion_png",
    "evaluation_html",
    "report_markdown",
    "slice_rows",
    "training_curves_png",
]

_SLICE_HEADER = ("slice", "rows", "challenger accuracy", "champion accuracy", "difference")


def _num(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.4f}" if sign else f"{value:.4f}"


def slice_rows(slices: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    """The slices table's rows, formatted: name, rows, challenger, champion, difference."""
    order: list[str] = [n for n in ("reference", "production", "combined") if n in slices]
    order += [n for n in slices if n not in order]
    return [
        (
            name,
            str(int(slices[name]["rows"])),
            _num(slices[name].get("challenger_accuracy")),
            _num(slices[name].get("champion_accuracy")),
            _num(slices[name].get("diff"), sign=True),
        )
        for name in order
    ]


def _slices_html(slices: dict[str, dict[str, Any]] | None) -> str:
    if not slices:
        return ""
    head = "".join(f"<th>{h}</th>" for h in _SLICE_HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in slice_rows(slices)
    )
    return f"<h2>Test slices</h2><table><tr>{head}</tr>{body}</table>\n"


_VARIANT_HEADER = (
    "variant",
    "runtime",
    "size",
    "test accuracy",
    "batch 1 p50 / p99 ms",
    "batch 64 p50 / p99 ms",
    "",
)


def _variants_html(variants: list[dict[str, Any]] | None, chosen: dict[str, str] | None) -> str:
    if not variants:
        return ""
    pick = (chosen or {}).get("name", "")
    head = "".join(f"<th>{h}</th>" for h in _VARIANT_HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in variant_rows(variants, pick)
    )
    why = html.escape((chosen or {}).get("reason", ""))
    return (
        f"<h2>Serving variants</h2><table><tr>{head}</tr>{body}</table>"
        f"<p>Serves <b>{html.escape(pick)}</b>: {why}.</p>\n"
    )


def _variants_markdown(ev: Evaluation) -> list[str]:
    if not ev.variants:
        return []
    pick = ev.serving_variant.get("name", "")
    return [
        "",
        "## Serving variants",
        "",
        "| " + " | ".join(h or "chosen" for h in _VARIANT_HEADER) + " |",
        "|---" * len(_VARIANT_HEADER) + "|",
        *["| " + " | ".join(row) + " |" for row in variant_rows(ev.variants, pick)],
        "",
        f"Serves `{pick}`: {ev.serving_variant.get('reason', '')}.",
    ]


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def training_curves_png(history: Sequence[dict[str, float]]) -> bytes:
    """Loss (train and validation) and validation accuracy per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.2))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], label="train")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], label="validation")
    loss_ax.set(title="loss", xlabel="epoch")
    loss_ax.legend()
    acc_ax.plot(epochs, [h["val_accuracy"] for h in history], color="tab:green")
    acc_ax.set(title="validation accuracy", xlabel="epoch")
    return _png(fig)


def confusion_png(classes: Sequence[str], matrix: Sequence[Sequence[int]]) -> bytes:
    """A heatmap of the confusion matrix with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = np.asarray(matrix)
    size = max(3.5, 0.45 * len(classes) + 1.5)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    ax.set(
        xticks=range(len(classes)),
        yticks=range(len(classes)),
        xlabel="predicted",
        ylabel="true",
        title="confusion matrix",
    )
    ax.set_xticklabels(classes, rotation=45 if len(classes) > 10 else 0)
    ax.set_yticklabels(classes)
    threshold = m.max() / 2 if m.size else 0
    for (i, j), v in np.ndenumerate(m):
        ax.text(
            j,
            i,
            str(v),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if v > threshold else "black",
        )
    return _png(fig)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def evaluation_html(
    *,
    model: str,
    dataset: str,
    decision: str,
    reason: str,
    metrics: dict[str, float],
    history: Sequence[dict[str, float]],
    classes: Sequence[str],
    confusion: Sequence[Sequence[int]],
    slices: dict[str, dict[str, Any]] | None = None,
    variants: list[dict[str, Any]] | None = None,
    serving_variant: dict[str, str] | None = None,
) -> str:
    """The whole report page; ``slices`` (see :mod:`datawheel.evaluation.slices`) adds the
    table of both models' accuracy on the reference, production and combined test rows, and
    ``variants`` the serving variants' table with the one picked."""
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in metrics.items()
    )
    curves = _img(training_curves_png(history), "training curves") if history else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(model)}: {decision}</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:60em}}
td{{padding:.2em .8em;border-bottom:1px solid #ddd}}
.promote{{color:#0a7d28}}.reject{{color:#b3261e}}</style></head>
<body><h1>Evaluation of {html.escape(model)}: <span class="{decision}">{decision}</span></h1>
<p>Dataset <code>{html.escape(dataset)}</code>. {html.escape(reason)}.</p>
<h2>Test metrics</h2><table>{rows}</table>
{_slices_html(slices)}{_variants_html(variants, serving_variant)}<h2>Training</h2>{curves}
<h2>Confusion matrix</h2>{_img(confusion_png(classes, confusion), "confusion matrix")}
</body></html>
"""


def report_markdown(ev: Evaluation, *, model: str, dataset: str) -> str:
    """The evaluation as Markdown, for the KFP UI and the CLI."""
    c = ev.comparison
    m = ev.metrics
    lines = [
        f"# Evaluation: {c.decision.upper()}",
        "",
        f"Challenger `{model}` on the test split of `{dataset}`.",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.4f} |" for k, v in {**m, **ev.extra}.items()],
        "",
        "## Decision",
        "",
        c.reason + ".",
    ]
    if c.champion_version is not None and c.champion_accuracy is not None:
        lines += [
            "",
            f"Champion `{c.champion_version}` accuracy {c.champion_accuracy:.4f}; "
            f"challenger {m['accuracy']:.4f}.",
        ]
    elif c.champion_version is not None:
        lines += ["", f"Champion `{c.champion_version}` was not scored on these test rows."]
    if c.confidence is not None and c.margin is not None:
        lines += [
            "",
            f"Rule: promote when {describe_confidence(c.confidence)} of the paired accuracy "
            f"difference (challenger - champion) is above the margin {c.margin:+.4f}.",
        ]
    production_rows = int(ev.slices.get("production", {}).get("rows", 0))
    if c.production_tolerance is not None and production_rows:
        lines += [
            "",
            "And on the production slice the challenger's accuracy is at most "
            f"{c.production_tolerance:.4f} below the champion's.",
        ]
    if ev.slices:
        lines += [
            "",
            "## Test slices",
            "",
            "Reference rows came from ingested data, production rows from harvested "
            "production labels; combined is the whole test split.",
            "",
            "| " + " | ".join(_SLICE_HEADER) + " |",
            "|---" * len(_SLICE_HEADER) + "|",
            *["| " + " | ".join(row) + " |" for row in slice_rows(ev.slices)],
        ]
    lines += _variants_markdown(ev)
    lines += [
        "",
        "## Per class",
        "",
        "| class | precision | recall | f1 | support |",
        "|---|---|---|---|---|",
    ]
    for cls, s in ev.per_class.items():
        lines.append(
            f"| {cls} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} "
            f"| {int(s['support'])} |"
        )
    lines += [
        "",
        "## Confusion matrix (rows: true, columns: predicted)",
        "",
        "| | " + " | ".join(ev.classes) + " |",
        "|---" * (len(ev.classes) + 1) + "|",
    ]
    for cls, row in zip(ev.classes, ev.confusion, strict=True):
        lines.append(f"| **{cls}** | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
