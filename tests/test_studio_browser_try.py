"""The try page in a real headless Chromium against real `datawheel serve` and `datawheel studio`
processes: draw a "1" with pointer actions, get the server's answer and ten probability bars,
the same answer from onnxruntime-web in the browser, an uploaded image, and a correction that
reaches the ledger's feedback; and a tabular model's form, whose feature named
``<script>alert(1)</script>`` is shown as text, answering the same in both places with a
category and a missing value. No console errors (a CSP refusal would be one)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from browser_support import (
    Stack,
    StudioProcess,
    chrome,
    console_errors,
    login,
    screenshot,
    start_stack,
    wait_for,
)
from PIL import Image
from serving_support import ServerProcess, reference_probabilities
from test_studio_try import XSS, tabular_store

from datawheel.serving.ledger.reader import read_ledger
from datawheel.storage import LocalStore

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CLASSES = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def stack(model_store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(model_store, tmp_path_factory.mktemp("try-stack")) as s:
        yield s


@pytest.fixture(scope="module")
def driver(stack: Stack) -> Iterator[WebDriver]:
    with chrome() as d:
        login(d, stack.studio.url, next_path="/try")
        yield d


def _bars(driver: WebDriver, container: str) -> dict[str, float]:
    from selenium.webdriver.common.by import By

    bars = driver.find_elements(By.CSS_SELECTOR, f"#{container} .bar")
    return {
        str(b.get_attribute("data-class")): float(b.get_attribute("data-p") or "nan") for b in bars
    }


def _text(driver: WebDriver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, element_id).text)


def _ledger(stack: Stack, kind: str, pid: str, timeout: float = 30) -> Any:
    store = LocalStore(Path(stack.store.removeprefix("file://")))
    deadline = time.monotonic() + timeout
    while True:
        rows = read_ledger(store, model="digits", kind=kind)
        rows = rows[rows["id"] == pid]
        if len(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)


def _answered(driver: WebDriver, previous_id: str) -> bool:
    pid = _text(driver, "prediction-id")
    agree = driver.find_element("id", "edge-agree").get_attribute("data-agree")
    return bool(pid) and pid != previous_id and agree is not None


def test_draw_a_one_and_both_answers_agree(driver: WebDriver, stack: Stack) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    wait_for(driver, lambda d: "Ready" in _text(d, "edge-status"))  # the ONNX session loaded
    canvas = driver.find_element(By.ID, "draw")
    actions = ActionChains(driver).move_to_element_with_offset(canvas, 4, -90).click_and_hold()
    for i in range(18):  # a near-vertical stroke down the middle, in small pointer moves
        actions.move_by_offset(-1 if i % 3 == 0 else 0, 10)
    actions.release().perform()
    wait_for(driver, lambda d: _answered(d, ""))

    server = _bars(driver, "probability-bars")
    edge = _bars(driver, "edge-probabilities")
    assert list(server) == CLASSES and list(edge) == CLASSES  # one bar per class
    assert abs(sum(server.values()) - 1) < 1e-4
    label = _text(driver, "prediction-label")
    assert label == max(server, key=server.__getitem__)
    assert _text(driver, "edge-label") == label
    assert max(abs(server[c] - edge[c]) for c in CLASSES) < 1e-3
    assert driver.find_element(By.ID, "edge-agree").get_attribute("data-agree") == "true"
    assert "ms" in _text(driver, "server-latency") and "ms" in _text(driver, "edge-latency")

    # what the server got is the stroke's pixels, and the bars are what model.ts answers for them
    pid = _text(driver, "prediction-id")
    stored = _ledger(stack, "predictions", pid)
    assert len(stored) == 1, f"prediction {pid} not in the ledger"
    pixels = np.asarray(stored["inputs"].iloc[0], np.float32).reshape(8, 8)
    assert pixels.max() > 0.2 and pixels[:, 3:5].sum() > 0.6 * pixels.sum()  # ink in the middle
    expected = reference_probabilities(stack.store, pixels.reshape(1, 64), "v1")[0]
    np.testing.assert_allclose([server[c] for c in CLASSES], expected, atol=1e-5)
    assert not console_errors(driver)


def test_that_is_wrong_sends_a_correction_to_the_ledger(driver: WebDriver, stack: Stack) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    pid = _text(driver, "prediction-id")
    assert pid, "the drawing test leaves a prediction on the page"
    predicted = _text(driver, "prediction-label")
    correct = "7" if predicted != "7" else "1"
    Select(driver.find_element(By.ID, "correct-label")).select_by_value(correct)
    driver.find_element(By.ID, "correct-send").click()
    wait_for(driver, lambda d: "labeled" in _text(d, "correct-status"))
    assert driver.find_element(By.ID, "correct-status").get_attribute("class") == "ok"
    feedback = _ledger(stack, "feedback", pid)
    assert list(feedback["label"]) == [correct] and list(feedback["predicted"]) == [predicted]
    assert not console_errors(driver)


def test_an_uploaded_image_is_predicted(driver: WebDriver, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from sklearn.datasets import load_digits

    digit = load_digits().images[0]  # a 0, dark ink on white paper once inverted
    paper = Image.fromarray(np.uint8(255 - digit * 255 / 16)).resize(
        (64, 64), Image.Resampling.NEAREST
    )
    path = tmp_path / "zero.png"
    paper.save(path)
    before = _text(driver, "prediction-id")
    driver.find_element(By.ID, "upload").send_keys(str(path))
    wait_for(driver, lambda d: _answered(d, before))
    assert _text(driver, "prediction-label") == "0"
    assert driver.find_element(By.ID, "edge-agree").get_attribute("data-agree") == "true"
    assert not console_errors(driver)
    screenshot(driver, tmp_path, "try")


def test_the_page_reports_its_figures(driver: WebDriver) -> None:
    """The page's own numbers, printed for the record (pytest -s)."""
    server = _text(driver, "server-latency")
    edge = _text(driver, "edge-latency")
    agree = driver.find_element("id", "edge-agree").get_attribute("data-max-dp")
    print(json.dumps({"server_latency": server, "edge_latency": edge, "max_dp": agree}))
    assert float(agree or "1") < 1e-3


def test_the_tabular_form_shows_names_as_text_and_both_answers_agree(
    driver: WebDriver, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    store = tabular_store(tmp_path / "store")
    server = ServerProcess(store=store, spool_dir=tmp_path / "spool", model="xss").start()
    studio = StudioProcess(store=store, model="xss", serve_url=server.url)
    try:
        studio.start(tmp_path)
        driver.get(f"{studio.url}/try")
        assert driver.find_element(By.CSS_SELECTOR, "label[for=feature-0]").text == XSS
        assert not driver.find_elements(By.CSS_SELECTOR, "main script")  # text, not a tag
        wait_for(driver, lambda d: "Ready" in _text(d, "edge-status"))
        seen = ""
        for island, bill in (("Dream", "50"), ("Biscoe", "40"), ("", "")):  # "": missing
            Select(driver.find_element(By.ID, "feature-1")).select_by_value(island)
            box = driver.find_element(By.ID, "feature-0")
            box.clear()
            box.send_keys(bill)
            driver.find_element(By.ID, "predict").click()
            wait_for(driver, lambda d, s=seen: _answered(d, s))
            seen = _text(driver, "prediction-id")
            server_p, edge_p = (
                _bars(driver, "probability-bars"),
                _bars(driver, "edge-probabilities"),
            )
            assert sorted(server_p) == ["Adelie", "Chinstrap", "Gentoo"] and list(edge_p) == list(
                server_p
            )
            assert max(abs(server_p[c] - edge_p[c]) for c in server_p) < 1e-3
            assert _text(driver, "edge-label") == _text(driver, "prediction-label")
            agree = driver.find_element(By.ID, "edge-agree").get_attribute("data-agree")
            assert agree == "true", _text(driver, "edge-agree")
        assert not console_errors(driver)
        screenshot(driver, tmp_path, "try-tabular")
    finally:
        studio.stop()
        server.stop()


def test_under_a_root_path_the_page_loads_everything_and_answers(
    driver: WebDriver, stack: Stack, tmp_path: Path
) -> None:
    """As behind Kubeflow's gateway (--root-path /studio): styles, scripts, the ONNX model and
    onnxruntime-web's WebAssembly all load under the prefix, and both answers come back."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    prefixed = StudioProcess(
        store=stack.store, serve_url=stack.server.url, args=["--root-path", "/studio"]
    ).start(tmp_path)
    try:
        driver.get_log("browser")  # type: ignore[attr-defined]  # drop earlier pages' lines
        driver.get(f"{prefixed.url}/studio/try")
        wait_for(driver, lambda d: "Ready" in _text(d, "edge-status"))
        header = driver.find_element(By.CSS_SELECTOR, "header.top")
        assert header.value_of_css_property("display") == "flex"  # studio.css was applied
        canvas = driver.find_element(By.ID, "draw")
        actions = ActionChains(driver).move_to_element_with_offset(canvas, 0, -80).click_and_hold()
        for _ in range(16):
            actions.move_by_offset(0, 10)
        actions.release().perform()
        wait_for(driver, lambda d: _answered(d, ""))
        assert driver.find_element(By.ID, "edge-agree").get_attribute("data-agree") == "true"
        nav = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "nav a")]
        assert nav and all("/studio/" in str(h) for h in nav)
        assert not console_errors(driver)
    finally:
        prefixed.stop()
