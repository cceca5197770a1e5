"""The studio's overview (/) and flywheel (/flywheel) pages and their reports, in process
(Starlette's TestClient) on real stores written by the real modules
(:mod:`flywheel_store_support`)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flywheel_store_support import HARVEST_REASON, REPORT, RUN_REASON, build
from serving_support import free_port
from starlette.testclient import TestClient

from datawheel.data import versions as ds
from datawheel.storage import LocalStore
from datawheel.studio.charts import Series, bar_chart, line_chart
from datawheel.studio.config import StudioConfig
from datawheel.studio.pages_flywheel import REPORT_CSP
from datawheel.studio.webapp import create_app

TOKEN = "flywheel-test-token"


def client(store: LocalStore, model: str = "toy", serve_url: str | None = None) -> TestClient:
    config = StudioConfig(store=store.uri, model=model, serve_url=serve_url, token=TOKEN)
    return TestClient(create_app(config, store=store))


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
    yield build(tmp_path_factory.mktemp("flywheel"))


@pytest.fixture(scope="module")
def page(history: LocalStore) -> str:
    answer = client(history).get("/flywheel")
    assert answer.status_code == 200, answer.text
    return answer.text


def _section(page: str, heading_id: str) -> str:
    """The HTML of the <section> labelled by ``heading_id``."""
    m = re.search(rf'<section[^>]*aria-labelledby="{heading_id}".*?</section>', page, re.S)
    assert m, f"no section {heading_id}"
    return m.group(0)


def test_dataset_lineage_shows_parent_production_rows_and_labels(
    history: LocalStore, page: str
) -> None:
    first, second = ds.list_versions(history, "toy")
    part = _section(page, "h-datasets")
    # newest first, with its parent linked and what the harvest added
    assert part.index(second.version) < part.index(f'id="ds-toy-{first.version}"')
    assert f'href="#ds-toy-{first.version}"' in part
    assert "180 rows · 90 from production" in part
    assert f'reason: <span class="reason">{HARVEST_REASON}</span>' in part
    lineage = second.manifest["lineage"]
    assert f"{lineage['corrections']} corrections" in part
    assert 'class="class-name">b</span>: 102' in part  # the harvested version's label counts
    assert f'href="/reports/dataset/toy/{second.version}"' in part


def test_model_versions_with_metrics_aliases_dataset_and_report(
    history: LocalStore, page: str
) -> None:
    part = _section(page, "h-models")
    rows = re.findall(r"<tr>\s*<td class=\"mono\">(v\d).*?</tr>", part, re.S)
    assert rows == ["v2", "v1"]
    v1 = re.search(r'<td class="mono">v1.*?</tr>', part, re.S)
    assert v1 and "alias-champion" in v1.group(0) and "alias-challenger" not in v1.group(0)
    assert "test_accuracy</span> 0.9000" in v1.group(0)
    first = ds.list_versions(history, "toy")[0]
    assert f"toy@{first.version}" in v1.group(0)
    assert 'href="/reports/model/v1"' in v1.group(0)


def test_drift_over_time_finds_the_shifted_hour(page: str) -> None:
    part = _section(page, "h-drift")
    assert re.search(r'<svg class="chart line"[^>]*role="img"', part)
    assert len(re.findall(r'<path class="series" d="M', part)) >= 1
    verdicts = re.findall(r"<td>(<span class=\"(?:bad|ok)\">[^<]*</span>)</td>", part)
    newest, oldest = verdicts[0], verdicts[-1]
    assert "drift (" in newest  # the last hour's rows were squeezed to the top of the range
    assert "no drift" in oldest
    assert "/reports/drift/v1?start=" in part


def test_live_accuracy_chart_and_table(page: str) -> None:
    part = _section(page, "h-accuracy")
    assert '<svg class="chart line"' in part and '<path class="series"' in part
    # 5 labels per batch, every third one a correction: 3 of 5 confirm the prediction
    assert re.search(r"<td>0\.600</td><td>5</td>", part)


def test_recent_runs_and_alias_moves_with_reasons(page: str) -> None:
    part = _section(page, "h-events")
    assert "run run-1 (rule accuracy)" in part and "succeeded" in part
    assert html.escape(RUN_REASON, quote=False) in part
    assert "champion: nothing -&gt; v1" in part and "the first model" in part


def test_report_links_all_answer_under_the_report_csp(history: LocalStore, page: str) -> None:
    c = client(history)
    links = sorted({html.unescape(h) for h in re.findall(r'href="(/reports/[^"]+)"', page)})
    kinds = {link.split("/")[2] for link in links}
    assert kinds == {"model", "drift", "dataset"}
    for link in links:
        answer = c.get(link)
        assert answer.status_code == 200, (link, answer.text[:300])
        assert answer.headers["content-security-policy"] == REPORT_CSP
    model = c.get("/reports/model/v1")
    assert model.text == REPORT and model.headers["content-type"].startswith("text/html")
    drift = c.get(next(link for link in links if "/drift/" in link))
    assert "Drift of toy:v1" in drift.text


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/reports/model/v9", 404),
        ("/reports/model/..%2Fcard.json", 404),
        ("/reports/drift/v1?start=abc", 400),
        ("/reports/drift/v1?start=10&end=5", 400),
        ("/reports/drift/v1?start=0&end=1e12", 400),
        ("/reports/drift/v1?start=0&end=86400", 404),  # no rows in 1970
        ("/reports/drift/v9?start=0&end=86400", 404),
        ("/reports/dataset/toy/0123456789abcdef", 404),
        ("/reports/dataset/..%2F..%2Fmodels/0123456789abcdef", 404),
    ],
)
def test_bad_report_requests_are_4xx_pages_with_a_message(
    history: LocalStore, path: str, status: int
) -> None:
    answer = client(history).get(path)
    assert answer.status_code == status, answer.text[:300]
    assert 'class="error" role="alert"' in answer.text
    assert "sandbox" not in answer.headers["content-security-policy"]


def test_a_missing_or_altered_model_report_is_refused(tmp_path: Path) -> None:
    store = build(tmp_path, history=False)
    store.delete("models/toy/versions/v2/report.html")
    store.put_bytes("models/toy/versions/v1/report.html", b"<script>evil()</script>")
    c = client(store)
    missing, altered = c.get("/reports/model/v2"), c.get("/reports/model/v1")
    assert missing.status_code == 404 and "missing" in missing.text
    assert altered.status_code == 409 and "checksum" in altered.text
    assert "evil()" not in altered.text


def test_overview_shows_champion_counts_and_pages(history: LocalStore) -> None:
    answer = client(history).get("/")
    assert answer.status_code == 200
    text = answer.text
    assert "toy:v1</strong>" in text and "test_accuracy</th><td>0.9000" in text
    assert '<td id="count-predictions">540</td>' in text  # 18 batches of 30
    assert '<td id="count-labelled">90</td>' in text
    for href in ("/try", "/review", "/flywheel"):
        assert f'href="{href}"' in text
    assert 'href="/login?next=/review"' in text  # the login hint
    assert "No model server" in text
    assert '<svg class="chart bars"' in text


def test_overview_tolerates_a_server_that_is_down(history: LocalStore) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    answer = client(history, serve_url=url).get("/")
    assert answer.status_code == 200
    assert "does not answer now" in answer.text and "cannot reach the model server" in answer.text


def test_empty_store_says_how_to_get_each_part(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "empty")
    c = client(store, model="nothing")
    fly = c.get("/flywheel")
    assert fly.status_code == 200
    assert fly.text.count('class="empty"') == 5
    for hint in ("datawheel datasets ingest", "datawheel run training", "datawheel serve",
                 "Review", "datawheel watch"):  # fmt: skip
        assert hint in fly.text
    home = c.get("/")
    assert home.status_code == 200 and "No versions of nothing yet" in home.text


def test_corrupt_parts_are_notes_not_errors(tmp_path: Path) -> None:
    store = build(tmp_path, history=False)
    store.put_bytes("models/toy/versions/v2/card.json", b"{not json")
    store.put_bytes("flywheel/watch/toy/state.json", b"[]")
    fly = client(store).get("/flywheel")
    assert fly.status_code == 200
    assert fly.text.count("could not read this part of the store") >= 2
    assert client(store).get("/").status_code == 200


def test_charts_escape_names_and_use_no_style_attributes() -> None:
    hostile = '<script>alert(1)</script>"'
    svg = str(
        line_chart(
            [Series(hostile, [(1.7e9, 0.5), (1.7e9 + 60, 0.7)], ["<b>n</b>", ""])],
            chart_id="c1",
            title=hostile,
            y_label=hostile,
        )
        + bar_chart([(hostile, 3.0)], chart_id="c2", title=hostile)
    )
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "<b>" not in svg
    assert "style=" not in svg
    assert svg.count("<title") >= 4 and 'aria-labelledby="c1-t c1-d"' in svg
    empty = str(line_chart([], chart_id="c3", title="t", y_label="y"))
    assert "no points yet" in empty


def test_time_ticks_stay_distinct_on_any_span() -> None:
    from datawheel.studio.charts import time_label

    t0 = 1_764_720_000.0  # a whole minute
    for span, step in ((120, 30), (3600, 900), (86400 * 3, 86400 / 2), (86400 * 60, 86400 * 15)):
        ticks = [time_label(t0 + i * step, span) for i in range(5)]
        assert len(set(ticks)) == 5, (span, ticks)
