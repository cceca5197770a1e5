"""The review page in a real headless Chromium against real `datawheel serve` and `datawheel
studio` processes: 30 predictions in the ledger, S skips one, 20 items labeled with the
keyboard alone (digit keys and Enter on the page; before logging in a key shows a login
link), U brings the last one back and a new key relabels it; the ledger's feedback then
holds exactly those 20 ids with those labels (the latest label per id), the skipped one has
none, the progress shows 20 labeled today and 10 left, and the page logged no console error
(a CSP refusal would be one). The other tab shows the likely label errors of the dataset."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from browser_support import chrome, console_errors, login, screenshot, start_stack, wait_for
from serving_support import digits_rows, infer_body

from datawheel.serving.ledger.reader import read_ledger
from datawheel.storage import open_store

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

N = 30


def _current(driver: WebDriver) -> tuple[str, str] | None:
    """(data-id, data-predicted) of the current item, or None (read in one script: the
    page re-renders the item list, so a found element can go stale before it is read)."""
    got = driver.execute_script(
        "const e = document.querySelector('.review-item.current');"
        "return e ? [e.dataset.id, e.dataset.predicted] : null;"
    )
    return (str(got[0]), str(got[1])) if got else None


def _press(driver: WebDriver, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(key).perform()


def _press_and_move(driver: WebDriver, key: str, before: str) -> str | None:
    """Press ``key`` and wait until the current item is another one; its id."""
    _press(driver, key)
    wait_for(driver, lambda d: (_current(d) or ("", ""))[0] != before)
    now = _current(driver)
    return now[0] if now else None


def _text(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element("id", element_id).text)


def test_label_twenty_items_with_the_keyboard(model_store: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.keys import Keys

    with start_stack(model_store, tmp_path) as stack, chrome() as driver:
        a, _ = digits_rows(N, offset=100)
        b, _ = digits_rows(N, offset=900)
        x = (0.5 * a + 0.5 * b).astype(np.float32)  # blends: unsure predictions
        status, doc = stack.server.post("/v2/models/digits/infer", infer_body(x))
        assert status == 200, doc
        sent = set(doc["parameters"]["prediction_ids"])
        store = open_store(stack.store)
        deadline = time.monotonic() + 30
        while set(read_ledger(store, model="digits")["id"]) != sent:
            assert time.monotonic() < deadline, "the predictions did not reach the ledger"
            time.sleep(0.2)

        driver.get(f"{stack.studio.url}/review")  # not logged in: a key asks for the token
        wait_for(driver, lambda d: _current(d) is not None)
        _press(driver, "1")
        wait_for(driver, lambda d: d.find_elements("id", "review-login-link"))
        assert "/login?next=" in str(
            driver.find_element("id", "review-login-link").get_attribute("href")
        )

        login(driver, stack.studio.url, next_path="/review")
        wait_for(driver, lambda d: _current(d) is not None)
        wait_for(driver, lambda d: _text(d, "queue-size") == str(N))
        assert _text(driver, "labeled-today") == "0"

        first = _current(driver)
        assert first is not None and first[0] in sent
        skipped = first[0]
        current = _press_and_move(driver, "s", skipped)  # S skips
        labels: dict[str, str] = {}
        started = time.perf_counter()
        for i in range(20):
            item = _current(driver)
            assert item is not None and item[0] not in labels and item[0] != skipped
            key = str(i % 10) if i % 2 == 0 else Keys.ENTER  # Enter accepts the prediction
            labels[item[0]] = str(i % 10) if i % 2 == 0 else item[1]
            current = _press_and_move(driver, key, item[0])
        elapsed = time.perf_counter() - started
        assert current is not None and current not in labels

        last = list(labels)[-1]
        _press(driver, "u")  # U: the last labeled item comes back to the front...
        wait_for(driver, lambda d: (_current(d) or ("", ""))[0] == last)
        relabel = "4" if labels[last] != "4" else "6"
        _press_and_move(driver, relabel, last)  # ...and a new key relabels it
        labels[last] = relabel

        wait_for(driver, lambda d: _text(d, "labeled-today") == "20", timeout=30)
        wait_for(driver, lambda d: _text(d, "queue-size") == str(N - 20), timeout=30)
        deadline = time.monotonic() + 30
        while True:
            fb = read_ledger(store, model="digits", kind="feedback")
            latest = fb.sort_values("ts").drop_duplicates("id", keep="last")
            got = dict(zip(latest["id"], latest["label"], strict=True))
            if got == labels or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert got == labels  # exactly those 20 ids, each with its latest label
        assert skipped not in got
        assert "Saved" in _text(driver, "review-status")
        print(f"\n20 items labeled with the keyboard in {elapsed:.2f} s")
        assert not console_errors(driver)
        screenshot(driver, tmp_path, "review")

        driver.find_element("id", "tab-issues").click()  # the other queue: likely label errors
        wait_for(driver, lambda d: (_current(d) or ("", ""))[0].startswith("row:digits:"))
        assert "Given label" in driver.find_element("css selector", ".review-item.current").text
        assert not console_errors(driver)
        screenshot(driver, tmp_path, "review-issues")
