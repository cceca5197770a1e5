"""The drift report as one self-contained HTML page: verdict, rule, histograms, full table.

Nothing is fetched when the page opens: the CSS is inline and every histogram is an inline
SVG drawn here (no script, no font, no image file, no CDN), so the page renders offline, in
the Kubeflow dashboard's HTML viewer, and straight from the store.

At the top: the verdict (dataset drift or not), the rule that decided it, the row counts
and the drifted features; then prediction and label drift when the report has them; then a
histogram overlay (reference vs current, share of rows per bin) for each of the most
drifted features; then the table of every feature, ranked by severity as the report ranks
them, drifted rows marked.

The histograms are the report's own (:attr:`FeatureDrift.histogram`): for a numeric feature
the reference-quantile bins its PSI was computed on (about a tenth of the reference in each
bin, so a shift shows as current bars rising above an even row of reference bars), for a
categorical one its categories, new ones marked. They exist for every kind of current
sample, a streamed Parquet file included, so the page never needs the raw rows.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from datawheel.monitoring.verdict import DriftReport, FeatureDrift

__all__ = ["Histogram", "drift_html", "histogram_of"]

REF_COLOUR = "#4c72b0"
CUR_COLOUR = "#dd8452"
MAX_BARS = 16  # categories beyond the 15 most frequent are summed as "other"
TOP_FEATURES = 8  # histograms shown by default


@dataclass(frozen=True)
class Histogram:
    """Share of rows per bin, reference and current, for one feature."""

    name: str
    labels: list[str]  # one per bin: a value range or a category
    reference: list[float]
    current: list[float]


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def histogram_of(feature: FeatureDrift) -> Histogram | None:
    """The bars of ``feature``'s histogram (None when the report has none for it)."""
    h = feature.histogram or {}
    ref = [float(v) for v in h.get("reference", [])]
    cur = [float(v) for v in h.get("current", [])]
    if not ref and not cur:
        return None
    n = max(len(ref), len(cur))
    ref += [0.0] * (n - len(ref))
    cur += [0.0] * (n - len(cur))
    if "categories" in h:
        keys = [str(k) for k in h["categories"]]
        new = set(feature.new_categories)
        labels = [f"{k} (new)" if k in new else k for k in keys]
        order = sorted(range(n), key=lambda i: (-(ref[i] + cur[i]), labels[i]))
        if n > MAX_BARS:
            shown, rest = order[: MAX_BARS - 1], order[MAX_BARS - 1 :]
            return Histogram(
                feature.name,
                [labels[i] for i in shown] + [f"other ({len(rest)})"],
                [ref[i] for i in shown] + [sum(ref[i] for i in rest)],
                [cur[i] for i in shown] + [sum(cur[i] for i in rest)],
            )
        return Histogram(
            feature.name,
            [labels[i] for i in order],
            [ref[i] for i in order],
            [cur[i] for i in order],
        )
    edges = [float(e) for e in h.get("edges", [])]
    if len(edges) + 1 != n:
        labels = [f"bin {i + 1}" for i in range(n)]
    elif not edges:
        labels = ["all"]
    else:
        labels = [f"< {_fmt(edges[0])}"]
        labels += [f"[{_fmt(a)}, {_fmt(b)})" for a, b in itertools.pairwise(edges)]
        labels.append(f">= {_fmt(edges[-1])}")
    return Histogram(feature.name, labels, ref, cur)


# --- drawing -----------------------------------------------------------------------------


def _svg(h: Histogram, width: int = 470, height: int = 210) -> str:
    """Reference and current shares per bin, side by side in each bin's slot."""
    left, right, top, bottom = 40, 8, 24, 58
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(h.labels), 1)
    peak = max([*h.reference, *h.current, 1e-12])
    slot = plot_w / n
    bar_w = max(slot / 2 - 1, 0.5)
    base = top + plot_h
    esc = html.escape
    parts = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="histogram of {esc(h.name)}" font-family="sans-serif">',
        f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" stroke="#888"/>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" font-size="10">{peak:.0%}</text>',
        f'<text x="{left - 4}" y="{base}" text-anchor="end" font-size="10">0</text>',
    ]
    for i, label in enumerate(h.labels):
        x = left + i * slot
        for j, (share, colour, side) in enumerate(
            ((h.reference[i], REF_COLOUR, "reference"), (h.current[i], CUR_COLOUR, "current"))
        ):
            bar = plot_h * share / peak
            parts.append(
                f'<rect x="{x + 0.5 + j * (bar_w + 1):.1f}" y="{base - bar:.1f}" '
                f'width="{bar_w:.1f}" height="{bar:.1f}" fill="{colour}">'
                f"<title>{esc(label)}: {side} {share:.2%}</title></rect>"
            )
    step = max(1, math.ceil(n / 10))
    for i in range(0, n, step):
        x, y = left + (i + 0.5) * slot, base + 8
        parts.append(
            f'<text x="{x:.1f}" y="{y}" font-size="9" text-anchor="end" '
            f'transform="rotate(-35 {x:.1f} {y})">{esc(h.labels[i][:18])}</text>'
        )
    legend_y = 12
    for j, (colour, text) in enumerate(((REF_COLOUR, "reference"), (CUR_COLOUR, "current"))):
        x = width - right - 170 + j * 90
        parts.append(
            f'<rect x="{x}" y="{legend_y - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x + 14}" y="{legend_y}" font-size="11">{text}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _num(value: Any) -> str:
    if value is None:
        return "-"
    v = float(value)
    if not math.isfinite(v):
        return "-"
    return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


_CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;max-width:76em;color:#222}
h1{margin-bottom:.2em}.drift{color:#b3261e}.stable{color:#0a7d28}
table{border-collapse:collapse;margin-top:.5em}
th,td{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:left;font-size:.9em}
td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.drifted td{background:#fdecea}tr.drifted td.name{font-weight:bold}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plot{border:1px solid #eee;padding:.4em}
.plot h3{margin:.1em 0 .3em;font-size:1em}code{background:#f4f4f4;padding:0 .25em}
.rule{background:#f7f7f7;border-left:4px solid #888;padding:.5em .8em}"""

_COLUMNS = ("test", "statistic", "p_value", "p_adjusted", "threshold", "psi", "ks", "rows")


def _table(rows: Sequence[FeatureDrift]) -> str:
    head = "".join(f"<th>{c}</th>" for c in ("name", "kind", *_COLUMNS, "drifted", "notes"))
    out = [f"<table><tr>{head}</tr>"]
    for f in rows:
        cells = [f'<td class="name">{html.escape(f.name)}</td>', f"<td>{html.escape(f.kind)}</td>"]
        for c in _COLUMNS:
            value = getattr(f, c)
            if isinstance(value, str):
                cells.append(f"<td>{html.escape(value)}</td>")
            else:
                cells.append(f'<td class="n">{_num(value)}</td>')
        state = "DRIFT" if f.drifted else ("no" if f.verdict else "no verdict")
        cells.append(f"<td>{state}</td><td>{html.escape(f.notes)}</td>")
        mark = ' class="drifted"' if f.drifted else ""
        out.append(f"<tr{mark}>{''.join(cells)}</tr>")
    out.append("</table>")
    return "".join(out)


def drift_html(
    report: DriftReport,
    *,
    title: str = "Drift report",
    reference_name: str = "reference",
    current_name: str = "current",
    top: int = TOP_FEATURES,
) -> str:
    """The whole page: verdict and rule, class drift, the ``top`` most drifted features'
    histograms, and every feature in the report's order (drifted first, by severity)."""
    esc = html.escape
    verdict = report.dataset_drift
    word, cls = ("dataset drift", "drift") if verdict else ("no dataset drift", "stable")
    parts = [
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{esc(title)}: {word}</title>',
        f"<style>{_CSS}</style></head><body>",
        f'<h1>{esc(title)}: <span class="{cls}">{word}</span></h1>',
        f"<p><b>{len(report.drifted_features)}</b> of {len(report.features)} features "
        f"drifted. Reference <code>{esc(reference_name)}</code> ({report.reference_rows:,} "
        f"rows), current <code>{esc(current_name)}</code> ({report.current_rows:,} rows).</p>",
        f'<p class="rule"><b>Rule:</b> {esc(report.rule)}.</p>',
    ]
    if report.drifted_features:
        names = ", ".join(f"<code>{esc(n)}</code>" for n in report.drifted_features)
        parts.append(f"<p>Drifted: {names}</p>")
    parts += [f"<p><i>{esc(note)}</i></p>" for note in report.notes]
    classes = [f for f in (report.prediction, report.label) if f is not None]
    if classes:
        parts.append("<h2>Predictions and labels</h2>")
        parts.append(_table(classes))
        for f in classes:
            h = histogram_of(f)
            if h is not None:
                parts.append(f'<div class="plot"><h3>{esc(f.name)}</h3>{_svg(h)}</div>')
    shown = [h for f in report.features[: max(top, 0)] if (h := histogram_of(f)) is not None]
    drifted = set(report.drifted_features)
    plots = "".join(
        f'<div class="plot"><h3>{esc(h.name)}{" (drifted)" if h.name in drifted else ""}'
        f"</h3>{_svg(h)}</div>"
        for h in shown
    )
    parts += [
        "<h2>Most drifted features</h2>",
        f'<div class="plots">{plots}</div>' if plots else "<p>No histograms.</p>",
        "<h2>Every feature, by severity</h2>",
        _table(report.features),
        "</body></html>\n",
    ]
    return "\n".join(parts)
