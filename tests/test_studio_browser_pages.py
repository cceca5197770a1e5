"""The overview and flywheel pages in a real headless Chromium, against real `datawheel serve`
and `datawheel studio` processes on a copy of the digits model store with some history:
rows served and labelled through the real server, two earlier hours of ledger segments
(the second drifted: inverted pixels) written by the ledger's own segment writer, a
harvested dataset version, and a dataset whose column is ``<script>alert(1)</script>``.

Screenshots "overview" and "flywheel"; the charts render (SVG paths), no console errors
(a CSP refusal would be one), the hostile names render as text with no alert, and a small
accessibility check on every page: inputs are labelled, images and charts named, and the
keyboard alone reaches every link and button in order, shows focus and follows links.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
from browser_support import Stack, chrome, console_errors, login, screenshot, start_stack, wait_for
from harvest_support import Ledger
from serving_support import digits_rows, infer_body

from datawheel.data import versions as ds
from datawheel.data.gate import admit
from datawheel.data.sources import Loaded
from datawheel.flywheel.harvest import harvest
from datawheel.serving.ids import PredictionIds
from datawheel.serving.ledger.reader import read_ledger
from datawheel.storage import LocalStore

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

XSS_COLUMN = "<script>alert(1)</script>"
XSS_CLASS = "<b>bold</b>&co"
PAGES = ["/", "/try", "/review", "/flywheel", "/login"]


def _store(stack: Stack) -> LocalStore:
    return LocalStore(Path(stack.store.removeprefix("file://")))


def _traffic(stack: Stack) -> None:
    """96 rows served and 24 of them labelled (a third corrected) through the real server."""
    x, y = digits_rows(96, offset=200)
    labelled = 0
    for start in range(0, 96, 32):
        status, doc = stack.server.post(
            "/v2/models/digits/infer", infer_body(x[start : start + 32])
        )
        assert status == 200, doc
        pids, predicted = doc["parameters"]["prediction_ids"], doc["outputs"][0]["data"]
        for i in range(8):
            label = str(y[start + i]) if i % 3 else str((int(predicted[i]) + 1) % 10)
            status, answer = stack.server.post(
                "/v2/models/digits/feedback", {"id": pids[i], "label": label}
            )
            assert status == 200, answer
            labelled += 1
    deadline = time.monotonic() + 30
    while len(read_ledger(_store(stack), model="digits", kind="feedback")) < labelled:
        assert time.monotonic() < deadline, "the server's feedback did not reach the ledger"
        time.sleep(0.3)


def _earlier_hours(store: LocalStore) -> None:
    """Two hours of earlier traffic, the second drifted, written as a server's segments."""
    ledger = Ledger(store, model="digits", ids=PredictionIds("digits", b"k" * 32))
    x, y = digits_rows(480, offset=600)
    now = time.time()
    for k in range(12):
        rows = x[k * 40 : (k + 1) * 40]
        rows = 1.0 - rows if k >= 6 else rows
        labels = [str(v) for v in y[k * 40 : (k + 1) * 40]]
        predicted = labels if k < 6 else [str((int(v) + 3) % 10) for v in labels]
        ts = now - 2 * 3600 + k * 600
        pids = ledger.predict(rows, predicted, ts=ts)
        ledger.label(pids[:10], labels[:10], predicted[:10], ts=ts + 20)


def _xss_dataset(store: LocalStore) -> None:
    frame = pd.DataFrame(np.random.default_rng(0).random((40, 2)), columns=[XSS_COLUMN, "f1"])
    frame["label"] = [XSS_CLASS if i % 2 else "plain" for i in range(40)]
    candidate = ds.ingest_frame(store, Loaded(frame, "label", "test:xss"), name="xss")
    assert admit(store, "xss", candidate.version).outcome == "committed"


@pytest.fixture(scope="module")
def stack(model_store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(model_store, tmp_path_factory.mktemp("pages-stack")) as s:
        store = _store(s)
        _traffic(s)
        assert harvest(store, "digits", reason="labels: the browser test's 24").created
        _earlier_hours(store)  # after the harvest: the inverted rows would fail validation
        _xss_dataset(store)
        yield s


@pytest.fixture(scope="module")
def driver(stack: Stack) -> Iterator[WebDriver]:
    with chrome() as d:
        login(d, stack.studio.url, next_path="/")
        yield d


def _open(driver: WebDriver, base: str, path: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + path)
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "main h1"))


def _full_page(driver: WebDriver, tmp: Path, name: str) -> None:
    """A screenshot of the whole page: the window made as tall as the page, then put back."""
    size = driver.get_window_size()
    tall = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(size["width"], min(max(tall + 120, size["height"]), 4000))
    try:
        screenshot(driver, tmp, name)
    finally:
        driver.set_window_size(size["width"], size["height"])


def _no_alert(driver: WebDriver) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018  # raises when no alert is open


def test_overview_renders_its_parts(driver: WebDriver, stack: Stack, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    _open(driver, stack.studio.url, "/")
    text = driver.find_element(By.TAG_NAME, "main").text
    assert "digits:v1" in text and "val_accuracy" in text  # the champion and its metrics
    assert driver.find_element(By.ID, "count-predictions").text == str(96 + 480)
    assert int(driver.find_element(By.ID, "count-labelled").text) == 24 + 120
    assert "onnx" in text or "torchscript" in text  # what the server serves, from its metadata
    bars = driver.find_elements(By.CSS_SELECTOR, "svg.chart.bars rect.bar")
    assert len(bars) >= 5 and all(float(b.get_attribute("width") or 0) >= 0 for b in bars)
    _full_page(driver, tmp_path, "overview")
    assert console_errors(driver) == []


def test_flywheel_renders_charts_lineage_and_runs(
    driver: WebDriver, stack: Stack, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    _open(driver, stack.studio.url, "/flywheel")
    charts = driver.find_elements(By.CSS_SELECTOR, "svg.chart.line")
    assert len(charts) >= 2  # drift of v1, live accuracy
    for chart in charts:
        paths = chart.find_elements(By.CSS_SELECTOR, "path.series")
        assert paths and all((p.get_attribute("d") or "").count("L") >= 1 for p in paths)
        assert chart.size["width"] > 300 and chart.size["height"] > 100  # laid out by the CSS
    drift = driver.find_element(By.CSS_SELECTOR, "table.drift tbody").text
    assert "drift (" in drift and "no drift" in drift  # the inverted hour, the plain one
    lineage = driver.find_element(By.CSS_SELECTOR, "ol.lineage").text
    assert "harvested from" in lineage and "the browser test's 24" in lineage
    assert "champion" in driver.find_element(By.CSS_SELECTOR, "table.models").text
    _full_page(driver, tmp_path, "flywheel")
    assert console_errors(driver) == []


def test_hostile_names_render_as_text(driver: WebDriver, stack: Stack) -> None:
    from selenium.webdriver.common.by import By

    _open(driver, stack.studio.url, "/flywheel")
    features = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "code.feature")]
    assert XSS_COLUMN in features
    classes = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".class-name")]
    assert XSS_CLASS in classes
    assert not driver.find_elements(By.CSS_SELECTOR, "main b")  # the class's <b> is text
    _no_alert(driver)
    assert console_errors(driver) == []


_UNLABELLED = """
const named = (el) => {
  if ((el.getAttribute('aria-label') || '').trim()) return true;
  const ids = (el.getAttribute('aria-labelledby') || '').split(/\\s+/).filter(Boolean);
  if (ids.length && ids.every((id) => document.getElementById(id)
      && document.getElementById(id).textContent.trim())) return true;
  return false;
};
const bad = [];
for (const el of document.querySelectorAll('input, select, textarea')) {
  if (el.type === 'hidden') continue;
  const labelled = (el.labels && [...el.labels].some((l) => l.textContent.trim())) || named(el);
  if (!labelled) bad.push(el.outerHTML.slice(0, 120));
}
for (const el of document.querySelectorAll('svg')) {
  if (el.closest('[aria-hidden="true"]')) continue;
  const title = el.querySelector(':scope > title');
  if (!(named(el) || (title && title.textContent.trim()))) bad.push(el.outerHTML.slice(0, 120));
}
for (const el of document.querySelectorAll('img')) {
  if (!el.hasAttribute('alt') && !named(el)) bad.push(el.outerHTML.slice(0, 120));
}
for (const el of document.querySelectorAll('button, a[href]')) {
  if (!(el.textContent.trim() || named(el) || el.title)) bad.push(el.outerHTML.slice(0, 120));
}
return bad;
"""

_FOCUSABLE = """
const sel = 'a[href], button, input, select, textarea, summary, [tabindex]';
return [...document.querySelectorAll(sel)].filter((el) => {
  if (el.disabled || el.type === 'hidden' || el.tabIndex < 0) return false;
  if (el.closest('[inert]')) return false;
  const box = el.getBoundingClientRect();
  return el.getClientRects().length > 0 && box.width > 0 && box.height > 0
    && getComputedStyle(el).visibility !== 'hidden';
});
"""

_FOCUS_SHOWN = """
const el = document.activeElement, s = getComputedStyle(el);
return (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0) || s.boxShadow !== 'none';
"""


@pytest.mark.parametrize("path", PAGES)
def test_every_control_is_labelled_and_every_picture_named(
    driver: WebDriver, stack: Stack, path: str
) -> None:
    _open(driver, stack.studio.url, path)
    time.sleep(0.3)  # let the page's script add what it adds
    assert driver.execute_script(_UNLABELLED) == []


@pytest.mark.parametrize("path", PAGES)
def test_the_keyboard_reaches_every_link_and_button_in_order(
    driver: WebDriver, stack: Stack, path: str
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _open(driver, stack.studio.url, path)
    time.sleep(0.3)
    expected = driver.execute_script(_FOCUSABLE)[:40]
    assert expected, "nothing on the page takes focus"
    skip = driver.find_element(By.CSS_SELECTOR, "a.skip")
    assert expected[0] == skip  # the first stop: "Skip to content"
    driver.execute_script("arguments[0].focus();", skip)  # from the top, as a fresh load
    reached = []
    for _ in expected[1:]:
        ActionChains(driver).send_keys(Keys.TAB).perform()
        active = driver.switch_to.active_element
        reached.append(active)
        assert driver.execute_script(_FOCUS_SHOWN), f"no visible focus on {active.tag_name}"
    assert [e.id for e in reached] == [e.id for e in expected[1:]]


def test_enter_on_a_nav_link_navigates(driver: WebDriver, stack: Stack) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _open(driver, stack.studio.url, "/")
    links = driver.find_elements(By.CSS_SELECTOR, "header nav a")
    assert [a.text for a in links] == ["Overview", "Try it", "Review", "Flywheel"]
    skip = driver.find_element(By.CSS_SELECTOR, "a.skip")
    driver.execute_script("arguments[0].focus();", skip)
    for _ in range(10):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        if driver.switch_to.active_element == links[3]:
            break
    assert driver.switch_to.active_element == links[3], "Tab never reached the Flywheel link"
    ActionChains(driver).send_keys(Keys.ENTER).perform()
    wait_for(driver, lambda d: d.current_url.endswith("/flywheel"))
    assert driver.find_element(By.CSS_SELECTOR, "main h1").text.startswith("The flywheel")


def test_a_drift_report_opens_under_its_sandboxed_csp(driver: WebDriver, stack: Stack) -> None:
    from selenium.webdriver.common.by import By

    _open(driver, stack.studio.url, "/flywheel")
    console_errors(driver)  # drop what came before
    link = driver.find_elements(By.LINK_TEXT, "drift report")[1]  # a drifted hour
    link.click()
    wait_for(driver, lambda d: "/reports/drift/v1" in d.current_url)
    heading = wait_for(driver, lambda d: d.find_elements(By.TAG_NAME, "h1"))[0]
    assert heading.text.startswith("Drift of digits:v1") and "DRIFT" in heading.text.upper()
    colour = heading.find_element(By.TAG_NAME, "span").value_of_css_property("color")
    assert colour not in ("rgba(0, 0, 0, 1)", "rgb(0, 0, 0)")  # its inline <style> applied
    assert console_errors(driver) == []


_POST_LABEL = """
const [csrf, done] = [arguments[0], arguments[arguments.length - 1]];
const headers = {"content-type": "application/json"};
if (csrf) headers["x-csrf-token"] = csrf;
fetch("/api/label", {method: "POST", headers, body: JSON.stringify({id: "x", label: "1"})})
  .then((r) => r.json().then((j) => done([r.status, j.error || ""])));
"""


def test_the_browser_is_refused_without_the_csrf_value_or_the_session(
    driver: WebDriver, stack: Stack
) -> None:
    """From the page itself: a label POST without the page's CSRF value is 403, one without
    the token session 401; the session cookie is out of the page script's reach."""
    driver.get(f"{stack.studio.url}/")
    csrf = driver.execute_script("return window.dw.csrf()")
    assert csrf and "dw_session" not in driver.execute_script("return document.cookie")
    status, error = driver.execute_async_script(_POST_LABEL, "")
    assert status == 403 and "CSRF" in error
    status, error = driver.execute_async_script(_POST_LABEL, "0" * 32)
    assert status == 403 and "CSRF" in error
    driver.delete_cookie("dw_session")
    status, error = driver.execute_async_script(_POST_LABEL, csrf)
    assert status == 401 and "token" in error
    login(driver, stack.studio.url, next_path="/")  # as the other tests expect
