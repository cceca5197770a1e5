"""LogTap: how kfp.local's output becomes progress events and per-step timings."""

from __future__ import annotations

import io
import sys
import threading

from datawheel.orchestration.local_runner import LogTap, RunEvent


def _tap() -> tuple[LogTap, io.StringIO, list[RunEvent]]:
    events: list[RunEvent] = []
    log = io.StringIO()
    return LogTap(log, events.append), log, events


def test_lines_become_events_and_timings() -> None:
    tap, log, events = _tap()
    text = (
        "03:11:47.764 - INFO - Executing task \x1b[96m'ingest'\x1b[0m\n"
        "    [datawheel] dataset digits@abc: 1797 rows\n"
        "    [datawheel] step=ingest body_seconds=1.250\n"
        "03:11:47.846 - INFO - Task \x1b[96m'ingest'\x1b[0m finished with status "
        "\x1b[92mSUCCESS\x1b[0m\n"
        "03:11:47.900 - INFO - Executing task 'importer'\n"
        "03:11:47.901 - INFO - Task 'importer' finished with status SUCCESS\n"
    )
    for i in range(0, len(text), 7):  # arbitrary chunking, as a pipe delivers it
        tap.write(text[i : i + 7])
    assert log.getvalue() == text
    assert [(e.kind, e.task or e.text) for e in events] == [
        ("start", "ingest"),
        ("message", "dataset digits@abc: 1797 rows"),
        ("end", "ingest"),
        ("start", "importer"),
        ("end", "importer"),
    ]
    assert [(s.task, s.status, s.body_seconds) for s in tap.steps] == [
        ("ingest", "SUCCESS", 1.25),
        ("importer", "SUCCESS", None),
    ]


def test_interleaved_tasks_of_one_step_keep_their_bodies() -> None:
    tap, _, _ = _tap()
    for line in (
        "Executing task 'train'",
        "Executing task 'train'",
        "[datawheel] step=train body_seconds=2.0",
        "[datawheel] step=train body_seconds=3.0",
        "Task 'train' finished with status SUCCESS",
        "Task 'train' finished with status SUCCESS",
        "Executing task 'register-2'",
        "[datawheel] step=register body_seconds=0.5",
        "Task 'register-2' finished with status SUCCESS",
    ):
        tap.write(line + "\n")
    assert [s.body_seconds for s in tap.steps] == [2.0, 3.0, 0.5]
    assert [s.status for s in tap.steps] == ["SUCCESS", "SUCCESS", "SUCCESS"]


def test_a_start_without_an_end_takes_the_runs_outcome() -> None:
    """kfp.local can skip the end line of concurrent loop iterations."""
    tap, _, _ = _tap()
    for line in (
        "Executing task 'train'",
        "Executing task 'train'",
        "[datawheel] step=train body_seconds=2.0",
        "[datawheel] step=train body_seconds=3.0",
        "Task 'train' finished with status SUCCESS",
    ):
        tap.write(line + "\n")
    tap.close_run(succeeded=True)
    assert [(s.status, s.body_seconds) for s in tap.steps] == [("SUCCESS", 2.0), ("SUCCESS", 3.0)]
    assert tap.steps[0].wall_seconds is not None and tap.steps[1].wall_seconds is None


def test_concurrent_writers_lose_no_lines() -> None:
    tap, log, events = _tap()

    def writer(n: int) -> None:
        for i in range(300):
            tap.write(f"[datawheel] writer {n} line {i}\n")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so an unlocked write would race
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert len(events) == 8 * 300
    assert sorted(e.text for e in events) == sorted(
        f"writer {n} line {i}" for n in range(8) for i in range(300)
    )
    assert log.getvalue().count("\n") == 8 * 300
