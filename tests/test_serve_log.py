"""The server's error log: a model failing on every request does not flood it."""

from __future__ import annotations

import logging

import pytest

from datawheel.serving.app import _ThrottledLog


def test_a_failing_model_logs_one_traceback_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    throttled = _ThrottledLog(logging.getLogger("t"), every_s=3600)
    with caplog.at_level(logging.ERROR, logger="t"):
        for _ in range(1000):
            try:
                raise RuntimeError("model failed")
            except RuntimeError:
                throttled.exception("unhandled error on POST /infer")
    assert len(caplog.records) == 1
    assert caplog.records[0].exc_info is not None
