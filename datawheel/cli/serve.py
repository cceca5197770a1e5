"""``datawheel serve``: serve a registered model on the Open Inference Protocol v2."""

from __future__ import annotations

import click

from datawheel.cli.output import store_option
from datawheel.monitoring.live import LiveDriftConfig
from datawheel.serving.app import RequestLimits
from datawheel.serving.connections import ConnectionLimits
from datawheel.serving.server import ServeConfig, run
from datawheel.serving.variants import CHOICES


@click.command()
@click.option(
    "--model",
    "model",
    required=True,
    metavar="NAME[@alias|:version]",
    help="Registered model; NAME alone means NAME@champion. An alias is followed: "
    "when it moves, the server hot-swaps to the new version.",
)
@store_option()
@click.option(
    "--variant",
    default="auto",
    show_default=True,
    type=click.Choice(CHOICES),
    help="Which exported file answers: auto is the one the card chose (the evaluate step's "
    "pick; torchscript for a version without one). torchscript runs model.ts; onnx, "
    "onnx-int8 and student run model.onnx, model_int8.onnx and student.onnx on ONNX Runtime "
    "(CUDA when a GPU is present). A version without it is refused at startup, and not "
    "swapped to when the alias moves.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--max-batch-size",
    default=64,
    show_default=True,
    type=click.IntRange(1),
    help="Most rows coalesced into one model call.",
)
@click.option(
    "--max-latency-ms",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Longest a row waits for others to join its batch (only while more "
    "requests are arriving).",
)
@click.option(
    "--max-body-bytes", default=4 * 1024 * 1024, show_default=True, type=click.IntRange(1)
)
@click.option(
    "--max-rows",
    default=1024,
    show_default=True,
    type=click.IntRange(1),
    help="Most rows in one request.",
)
@click.option(
    "--max-connections",
    default=ConnectionLimits.max_connections,
    show_default=True,
    type=click.IntRange(1),
    help="Client connections kept open. A request on a connection beyond this is answered 503 "
    "with Retry-After (health probes and /metrics are always answered). Lowered at start if "
    "the open-files limit (raised to its hard limit) cannot hold it plus 128 descriptors for "
    "the store and the ledger.",
)
@click.option(
    "--header-timeout",
    default=ConnectionLimits.header_timeout_s,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds a request's headers may take to arrive (from connect, or from the request's "
    "first byte on a kept-alive connection); then 408 and the connection is closed.",
)
@click.option(
    "--body-timeout",
    default=ConnectionLimits.body_timeout_s,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds a request's body may take to arrive after its headers; then 408 and the "
    "connection is closed.",
)
@click.option(
    "--spool-dir",
    default="",
    help="Ledger write-ahead log and spool "
    "(default $DATAWHEEL_SPOOL_DIR or .datawheel/spool/NAME).",
)
@click.option("--ledger-flush-seconds", default=2.0, show_default=True, type=click.FloatRange(0.05))
@click.option(
    "--poll-seconds",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0.05),
    help="How often the alias is checked for a new version.",
)
@click.option(
    "--load-retry-seconds",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0.05),
    help="A version the alias points at that fails to load is tried again after this, "
    "doubling up to 5 minutes, and at once when the alias is pointed at it again.",
)
@click.option(
    "--drift-window-rows",
    default=LiveDriftConfig.window_rows,
    show_default=True,
    type=click.IntRange(1),
    help="Rows in the live drift window (the latest ones; the PSI gauges are NaN until it "
    "holds a quarter of this).",
)
@click.option(
    "--drift-features",
    default=LiveDriftConfig.feature_cap,
    show_default=True,
    type=click.IntRange(0),
    help="Features exported by name in datawheel_feature_drift_psi; the rest are one "
    'feature="_other" series (their largest PSI).',
)
@click.option(
    "--fsync",
    is_flag=True,
    help="fsync the ledger log before answering (survives power loss, not only a process kill).",
)
def serve(
    model: str,
    store: str | None,
    variant: str,
    host: str,
    port: int,
    max_batch_size: int,
    max_latency_ms: float,
    max_body_bytes: int,
    max_rows: int,
    max_connections: int,
    header_timeout: float,
    body_timeout: float,
    spool_dir: str,
    ledger_flush_seconds: float,
    poll_seconds: float,
    load_retry_seconds: float,
    drift_window_rows: int,
    drift_features: int,
    fsync: bool,
) -> None:
    """Serve MODEL until SIGTERM. Set $DATAWHEEL_SERVE_TOKEN to require a bearer token on
    infer and feedback (health and /metrics stay open). Prediction ids are signed with
    $DATAWHEEL_FEEDBACK_KEY (or the file $DATAWHEEL_FEEDBACK_KEY_FILE names), else with a
    key kept in the store, so any replica accepts feedback for any replica's predictions."""
    run(
        ServeConfig(
            model=model,
            store=store,
            host=host,
            port=port,
            max_batch_size=max_batch_size,
            max_latency_ms=max_latency_ms,
            limits=RequestLimits(max_body_bytes=max_body_bytes, max_rows=max_rows),
            connections=ConnectionLimits(
                max_connections=max_connections,
                header_timeout_s=header_timeout,
                body_timeout_s=body_timeout,
            ),
            spool_dir=spool_dir,
            ledger_flush_seconds=ledger_flush_seconds,
            poll_seconds=poll_seconds,
            load_retry_seconds=load_retry_seconds,
            fsync=fsync,
            drift=LiveDriftConfig(window_rows=drift_window_rows, feature_cap=drift_features),
            variant=variant,
        )
    )
