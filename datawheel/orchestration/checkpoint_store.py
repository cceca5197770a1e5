"""Training checkpoints kept in a store, so a retried or rescheduled train pod resumes anywhere.

A ReadWriteOnce volume cannot be shared by the parallel train pods of a learning-rate sweep
(a pod on a second GPU node hangs on Multi-Attach), and a profile namespace would need one
per namespace. With ``DATAWHEEL_CHECKPOINT_DIR=store`` (the run's own store) or a store URI
(``s3://bucket/prefix``) the train step trains against a local temporary folder and
:class:`StoreCheckpoints` mirrors its ``last.pt``: pulled before training, pushed after an
epoch (at most every ``every_s`` seconds; at the end, whatever that held back). Each run's
key is its checkpoint fingerprint (data, transform, config and store), so parallel trials never
share one, and an S3 PUT is atomic: a reader sees a whole old or a whole new checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from datawheel.storage import KeyNotFoundError, Store

__all__ = ["CHECKPOINT_FILE", "StoreCheckpoints", "is_store_target"]

CHECKPOINT_FILE = "last.pt"


def is_store_target(base: str) -> bool:
    """Whether a checkpoint root names a store (``store`` or a URI) rather than a folder."""
    return base == "store" or "://" in base


class StoreCheckpoints:
    """Mirrors one run's local ``last.pt`` to ``prefix/last.pt`` in ``store``."""

    def __init__(
        self,
        store: Store,
        prefix: str,
        *,
        every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        log: Callable[[str], None] = print,
    ) -> None:
        self.store = store
        self.key = f"{prefix.strip('/')}/{CHECKPOINT_FILE}"
        self.every_s = every_s
        self._clock = clock
        self._log = log
        self._pushed_at: float | None = None
        self._held = False  # a push was skipped by the throttle since the last upload
        self.pushes = 0

    def pull(self, folder: Path) -> bool:
        """Fetch the stored checkpoint into ``folder``; False when there is none yet."""
        path = folder / CHECKPOINT_FILE
        try:
            self.store.get_file(self.key, path)  # makes the folder only when there is a file
        except KeyNotFoundError:
            return False
        self._log(
            f"checkpoint: resuming from {self.key} in the store ({path.stat().st_size} bytes)"
        )
        return True

    def push(self, path: Path, *, final: bool = False) -> None:
        """Upload ``path`` unless the last upload was under ``every_s`` ago; ``final`` uploads
        what a throttled push held back (nothing when the store already has the latest)."""
        now = self._clock()
        if final and not self._held:
            return
        if not final and self._pushed_at is not None and now - self._pushed_at < self.every_s:
            self._held = True
            return
        if not path.is_file():
            return
        self.store.put_file(self.key, path)
        self._pushed_at, self._held = now, False
        self.pushes += 1
