"""The drift report's artifacts: the self-contained HTML page, the Markdown, the metrics, and
the `drift-report` KFP component (compiled, and run through kfp.local)."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from datawheel.monitoring.engine import compare
from datawheel.monitoring.report_html import drift_html, histogram_of
from datawheel.orchestration.drift_report import DriftRun, drift_markdown, drift_report_step

NAMES = [f"f{i:02d}" for i in range(20)]


def _frames(n: int = 3000) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(7)
    ref = pd.DataFrame(rng.normal(size=(n, len(NAMES))), columns=NAMES)
    cur = pd.DataFrame(rng.normal(size=(n, len(NAMES))), columns=NAMES)
    cur["f03"] += 5.0  # one feature of 20, five sigma
    cur["f11"] *= 2.0  # variance doubled, same mean
    ref["shop"] = rng.choice(["north", "south"], n)
    cur["shop"] = rng.choice(["north", "south", "<new&shop>"], n, p=[0.2, 0.2, 0.6])
    ref.loc[:50, "f07"] = np.nan  # NaN and a constant column: reported, never a crash
    ref["flat"], cur["flat"] = 1.5, 1.5
    return ref, cur


@pytest.fixture(scope="module")
def run() -> DriftRun:
    ref, cur = _frames()
    report = compare(ref, cur)
    return DriftRun(report, "ref <a&b>.csv", "current.parquet", [])


def _offline(page: str) -> None:
    assert not re.search(r"(?:src|href|url)\s*[=(]\s*[\"']?\s*(?:https?:)?//", page, re.I)
    assert "http://" not in page and "https://" not in page
    for tag in ("<script", "<link", "<img", "<iframe", "@import"):
        assert tag not in page.lower(), tag


def _rows(page: str) -> dict[str, str]:
    """Each table row of the full table by feature name, with its <tr> tag."""
    table = page.split("Every feature, by severity", 1)[1]
    rows = re.findall(r"(<tr[^>]*>)<td class=\"name\">([^<]*)</td>", table)
    return {name: tag for tag, name in rows}


def test_html_opens_offline_names_every_feature_and_marks_the_drifted(run: DriftRun) -> None:
    page = drift_html(run.report, reference_name=run.reference, current_name=run.current)
    _offline(page)
    assert page.startswith("<!doctype html>")
    head = page.split("<h2>", 1)[0]  # verdict and rule come before everything else
    assert "dataset drift" in head and "Rule:" in head and html.escape(run.report.rule) in head
    assert "ref &lt;a&amp;b&gt;.csv" in head  # names are escaped
    rows = _rows(page)
    assert set(rows) == {*NAMES, "shop", "flat"}
    drifted = set(run.report.drifted_features)
    assert {"f03", "f11", "shop"} <= drifted
    for name, tag in rows.items():
        assert ('class="drifted"' in tag) == (name in drifted), name
    order = list(rows)
    assert order[: len(drifted)] == run.report.drifted_features  # ranked: drifted first
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) == 8  # the most drifted features
    plots = re.findall(r'<div class="plot"><h3>([^<]*)</h3>', page)
    assert plots[0] == f"{order[0]} (drifted)"
    assert "&lt;new&amp;shop&gt; (new)" in page  # a category absent from the reference


def test_histograms_are_the_reports_bins(run: DriftRun) -> None:
    f03 = next(f for f in run.report.features if f.name == "f03")
    h = histogram_of(f03)
    assert h is not None and len(h.labels) == len(h.reference) == len(h.current) == 10
    assert abs(sum(h.reference) - 1) < 1e-9 and abs(sum(h.current) - 1) < 1e-9
    assert h.current[-1] > 0.99  # +5 sigma: everything lands in the top reference bin
    assert h.labels[0].startswith("< ") and h.labels[-1].startswith(">= ")
    shop = next(f for f in run.report.features if f.name == "shop")
    hs = histogram_of(shop)
    assert hs is not None and hs.labels == ["south", "north", "<new&shop> (new)"]  # by share
    assert hs.reference[2] == 0 and hs.current[2] > 0.5


def test_many_categories_are_capped_with_an_other_bar() -> None:
    rng = np.random.default_rng(3)
    ref = pd.DataFrame({"city": rng.choice([f"c{i}" for i in range(40)], 4000)})
    cur = pd.DataFrame({"city": rng.choice([f"c{i}" for i in range(40)], 4000)})
    h = histogram_of(compare(ref, cur).features[0])
    assert h is not None and len(h.labels) == 16 and h.labels[-1] == "other (25)"
    assert abs(sum(h.reference) - 1) < 1e-9


def test_markdown_lists_every_feature_and_the_rule(run: DriftRun) -> None:
    md = drift_markdown(run)
    assert md.startswith("# Drift: DATASET DRIFT")
    assert run.report.rule in md
    for name in [*NAMES, "shop", "flat"]:
        assert f"\n| {name} |" in md, name
    drifted_lines = [line for line in md.splitlines() if "**DRIFT**" in line]
    assert {line.split("|")[1].strip() for line in drifted_lines} == set(
        run.report.drifted_features
    )


class _Sink:
    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def log_metric(self, metric: str, value: float) -> None:
        self.values[metric] = value


def test_step_writes_markdown_html_and_metrics(tmp_path: Path) -> None:
    ref, cur = _frames()
    ref.to_csv(tmp_path / "ref.csv", index=False)
    cur.to_parquet(tmp_path / "cur.parquet", index=False)
    sink = _Sink()
    out = drift_report_step(
        "",
        str(tmp_path / "ref.csv"),
        str(tmp_path / "cur.parquet"),
        "",
        "24h",
        "",
        str(tmp_path / "report.md"),
        str(tmp_path / "report.html"),
        sink,
    )
    assert out["dataset_drift"] is True and "histogram" not in out["features"][0]
    assert (tmp_path / "report.md").read_text().startswith("# Drift: DATASET DRIFT")
    _offline((tmp_path / "report.html").read_text())
    assert sink.values["dataset_drift"] == 1.0
    assert sink.values["drifted_features"] == len(out["drifted_features"]) >= 3
    assert sink.values["current_rows"] == 3000 and sink.values["worst_severity"] > 1


def test_step_turns_bad_input_into_exit_1(tmp_path: Path, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exc:
        drift_report_step(
            "", str(tmp_path / "none.csv"), "x.csv", "", "24h", "", "r.md", "r.html", _Sink()
        )
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "error: drift_report: " in err and "does not exist" in err and "Traceback" not in err


def test_component_compiles_with_its_artifacts(tmp_path: Path) -> None:
    from datawheel.components.monitoring import drift_report
    from kfp import compiler

    path = tmp_path / "drift_report.yaml"
    compiler.Compiler().compile(drift_report, str(path))
    spec = yaml.safe_load(path.read_text())
    assert spec["pipelineInfo"]["name"] == "drift-report"
    component = next(iter(spec["components"].values()))
    artifacts = component["outputDefinitions"]["artifacts"]
    assert {k: v["artifactType"]["schemaTitle"] for k, v in artifacts.items()} == {
        "report": "system.Markdown",
        "html_report": "system.HTML",
        "metrics": "system.Metrics",
    }
    params = component["outputDefinitions"]["parameters"]
    assert params["dataset_drift"]["parameterType"] == "BOOLEAN"
    assert set(component["inputDefinitions"]["parameters"]) == {
        "store", "reference", "current", "model", "since", "label", "required"
    }  # fmt: skip
    assert component["inputDefinitions"]["parameters"]["required"]["defaultValue"] is True


_KFP_LOCAL = """
import json, sys
from kfp import local
from datawheel.components.monitoring import drift_report
root, ref, cur = sys.argv[1:]
local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root)
task = drift_report(store="", reference=ref, current=cur, model="", since="24h", label="")
print(json.dumps({
    "dataset_drift": task.outputs["dataset_drift"],
    "report": task.outputs["report"].path,
    "html": task.outputs["html_report"].path,
    "metrics": task.outputs["metrics"].metadata,
}))
"""


def test_component_runs_through_kfp_local(tmp_path: Path) -> None:
    """Run as the CLI runs pipelines: in a process whose working directory is not the
    checkout (its docker/ folder would shadow the docker package kfp.local imports)."""
    ref, cur = _frames(500)
    ref.to_csv(tmp_path / "ref.csv", index=False)
    cur.to_csv(tmp_path / "cur.csv", index=False)
    args = [str(tmp_path / "root"), str(tmp_path / "ref.csv"), str(tmp_path / "cur.csv")]
    proc = subprocess.run(
        [sys.executable, "-c", _KFP_LOCAL, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["dataset_drift"] is True
    md = Path(out["report"]).read_text()
    assert md.startswith("# Drift: DATASET DRIFT") and "f03" in md
    _offline(Path(out["html"]).read_text())
    assert out["metrics"]["dataset_drift"] == 1.0
    assert out["metrics"]["current_rows"] == 500
