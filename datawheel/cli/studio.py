"""``datawheel studio``: the web page to try the model, review its predictions and watch the
flywheel (see :mod:`datawheel.studio`)."""

from __future__ import annotations

import os

import click

from datawheel.cli.output import store_option
from datawheel.storage import open_store
from datawheel.storage.settings import store_uri
from datawheel.studio.config import (
    SERVE_TOKEN_ENV,
    StudioConfig,
    check_root_path,
    check_serve_url,
    studio_token,
)

__all__ = ["studio"]


@click.command()
@store_option()
@click.option("--model", required=True, metavar="NAME", help="Registered model to show.")
@click.option(
    "--serve-url",
    default=None,
    metavar="URL",
    help="The model server (`datawheel serve`) predictions and labels go through, e.g. "
    "http://127.0.0.1:8080 [default: $DATAWHEEL_SERVE_URL; without one the pages only read].",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8090, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--root-path",
    default="",
    metavar="PATH",
    help="The path prefix a proxy serves the studio under (it strips it before passing the "
    "request on), e.g. /studio behind Kubeflow's gateway: every link carries it.",
)
@click.option(
    "--allow-framing",
    is_flag=True,
    help="Let pages of the studio's own origin show it in a frame (the Kubeflow central "
    "dashboard's menu does); other sites still may not.",
)
def studio(
    store: str | None,
    model: str,
    serve_url: str | None,
    host: str,
    port: int,
    root_path: str,
    allow_framing: bool,
) -> None:
    """Serve the studio: / (overview), /try, /review and /flywheel.

    Labeling needs a token: $DATAWHEEL_STUDIO_TOKEN, else $DATAWHEEL_SERVE_TOKEN (which also
    authenticates the studio to the model server), else one made up now and printed.
    """
    import uvicorn

    from datawheel.registry import list_models
    from datawheel.studio.webapp import create_app

    uri = store_uri(store)
    url = check_serve_url(serve_url or os.environ.get("DATAWHEEL_SERVE_URL"))
    the_store = open_store(uri)
    known = list_models(the_store)
    if model not in known:
        from datawheel.errors import DatawheelError, name_list

        raise DatawheelError(
            f"no model {model!r} in {uri}",
            f"pass one of: {name_list(known)}" if known else "train one first (make demo-train)",
        )
    token, generated = studio_token()
    config = StudioConfig(
        store=uri,
        model=model,
        serve_url=url,
        token=token,
        serve_token=os.environ.get(SERVE_TOKEN_ENV) or None,
        root_path=check_root_path(root_path),
        allow_framing=allow_framing,
    )
    app = create_app(config, store=the_store)
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    )
    shown = f"http://{host if ':' not in host else f'[{host}]'}:{port}{config.root_path}/"
    click.echo(f"studio: serving {model} from {uri} at {shown}", err=False)
    if generated:
        click.echo(f"studio: labeling token (no $DATAWHEEL_STUDIO_TOKEN set): {token}")
    server.run()
