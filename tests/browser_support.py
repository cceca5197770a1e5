"""Real browser tests of the studio: headless Debian Chromium driven by selenium, against real
processes (``datawheel serve``, ``datawheel studio``) on a real store.

:func:`start_stack` serves a private copy of a model store and starts the studio on it;
:func:`chrome` opens a headless Chromium; :func:`login` enters the token on /login;
:func:`screenshot` saves a page (to the test's folder, and to $DATAWHEEL_SCREENSHOT_DIR when
set: ``DATAWHEEL_SCREENSHOT_DIR=docs/screenshots pytest tests/test_studio_browser*.py``
refreshes the README's pictures).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from serving_support import DATAWHEEL, ServerProcess, copy_store, free_port, wait_ready

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

TOKEN = "studio-test-token-0123"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def need_chromium() -> None:
    """Skip (with the fix) where Debian's chromium and chromium-driver are missing."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("needs Debian chromium and chromium-driver: run `make system-deps`")


@dataclass
class StudioProcess:
    store: str
    model: str = "digits"
    serve_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)  # more `datawheel studio` options
    port: int = 0
    proc: subprocess.Popen[str] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log_dir: Path, timeout: float = 60) -> StudioProcess:
        self.port = self.port or free_port()
        self.log_path = log_dir / f"studio-{self.port}.log"
        cmd = [DATAWHEEL, "studio", "--store", self.store, "--model", self.model]
        cmd += ["--port", str(self.port)]
        if self.serve_url:
            cmd += ["--serve-url", self.serve_url]
        cmd += self.args
        env = {**os.environ, "DATAWHEEL_STUDIO_TOKEN": TOKEN, **self.env}
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
        wait_ready(self.proc, f"{self.url}/healthz", self.log, "studio", timeout)
        return self

    def log(self) -> str:
        return self.log_path.read_text()[-3000:] if self.log_path else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


@dataclass
class Stack:
    store: str
    server: ServerProcess
    studio: StudioProcess


@contextmanager
def start_stack(template_store: str, tmp: Path, variant: str = "") -> Iterator[Stack]:
    """A private copy of ``template_store``, served by `datawheel serve` and shown by the studio."""
    store = copy_store(template_store, tmp / "store")
    server = ServerProcess(store=store, spool_dir=tmp / "spool", variant=variant).start()
    studio = StudioProcess(store=store, serve_url=server.url)
    try:
        studio.start(tmp)
        yield Stack(store=store, server=server, studio=studio)
    finally:
        studio.stop()
        server.stop()


@contextmanager
def chrome(width: int = 1280, height: int = 1000) -> Iterator[WebDriver]:
    """A headless Chromium (selenium WebDriver); closed on exit."""
    need_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-extensions",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def login(driver: WebDriver, base_url: str, token: str = TOKEN, next_path: str = "/") -> None:
    """Enter ``token`` on /login with the keyboard, and wait for the redirect."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{base_url}/login?next={next_path}")
    box = driver.find_element(By.ID, "token")
    box.send_keys(token, Keys.ENTER)
    WebDriverWait(driver, 20).until(ec.url_contains(next_path))
    WebDriverWait(driver, 20).until(  # the page after the login redirect has rendered
        lambda d: d.find_elements(By.CSS_SELECTOR, "header.top .session form")
    )


def wait_for(driver: WebDriver, check: Any, timeout: float = 30) -> Any:
    """``check(driver)``'s first truthy value, polled (selenium's WebDriverWait)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(check)


def screenshot(driver: WebDriver, tmp: Path, name: str) -> Path:
    """Save the page as ``name``.png in ``tmp`` (and in $DATAWHEEL_SCREENSHOT_DIR if set)."""
    path = tmp / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000, f"screenshot {path} is suspiciously small"
    if out := os.environ.get("DATAWHEEL_SCREENSHOT_DIR"):
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(out) / path.name)
    return path


def console_errors(driver: WebDriver) -> list[str]:
    """The page's console errors (a CSP refusal shows up here)."""
    logs = driver.get_log("browser")  # type: ignore[attr-defined]  # Chrome only
    return [e["message"] for e in logs if e.get("level") == "SEVERE"]
