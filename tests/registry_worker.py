"""A separate process that registers models, for the registry's concurrency tests.

``python registry_worker.py STORE_URI NAME GO_FILE OUT_JSON SRC_DIR...``: waits for GO_FILE
(so every worker starts at once), registers each SRC_DIR, writes the versions it was told.
``--die-before-card`` kills the process with SIGKILL right before the card is written.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from datawheel import registry
from datawheel.storage import Store, open_store


class _DieBeforeCard:
    """Delegates to a real store; the process is killed when the card is about to land."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.uri = inner.uri

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def create_bytes(self, key: str, data: bytes) -> bool:
        if key.endswith("/card.json"):
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.create_bytes(key, data)


def main(argv: list[str]) -> int:
    die = "--die-before-card" in argv
    uri, name, go, out, *sources = [a for a in argv if a != "--die-before-card"]
    store: Store = open_store(uri)
    if die:
        store = _DieBeforeCard(store)  # type: ignore[assignment]
    deadline = time.monotonic() + 60
    while not Path(go).exists():
        if time.monotonic() > deadline:
            return 3
        time.sleep(0.005)
    got = [registry.register(store, name, src, card={"src": src}).version for src in sources]
    Path(out).write_text(json.dumps(got))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
