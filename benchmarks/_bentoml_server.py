"""BentoML serving a datawheel TorchScript export on the v2 infer route.

Run by ``benchmarks/serve_bench.py`` with the interpreter of its own virtual environment
(``benchmarks/.venv-bentoml``: torch 2.13.0 CPU, then ``bentoml`` 1.4.x); the main venv has
no bentoml.

    benchmarks/.venv-bentoml/bin/python benchmarks/_bentoml_server.py \\
        --model-file STORE/models/digits/versions/v1/model.ts --name digits --port 8080

Run as a script it execs ``bentoml serve _bentoml_server:TorchScriptService`` (BentoML's
production server: a circus arbiter and one worker process), handing the model file and
name over in environment variables; the worker then imports this file as a module.
What the service serves:

* ``POST /v2/models/NAME/infer``: a ``@bentoml.api`` (``async``, so the forward pass runs on
  the worker's event loop, as in the kserve and fastapi servers) whose parameters are the
  v2 body's fields (``inputs``, optional ``id``; BentoML validates them with pydantic); the
  first input's ``data`` as a float32 array of its ``shape`` -> ``model.ts`` -> softmax ->
  the same v2 outputs as the other servers (``label`` BYTES, ``probabilities`` FP32);
* ``GET /v2/health/ready``: a two-line Starlette app mounted on the service
  (``@bentoml.asgi_app``; BentoML's own probe is ``/readyz``, and its ``endpoints.readyz``
  setting only tells BentoML's clients where to look). It answers in the worker, which
  starts listening once the service's ``__init__`` has loaded the model.

Settings, to match the other servers (one worker, one torch thread, no batching):
``workers=1``; BentoML's adaptive batching is OFF (``batchable=False``, its default: it needs
an API whose single argument is the batch, which a v2 document is not); the access log is
off (``logging.access.enabled=False``), its Prometheus metrics stay on (as datawheel's and
kserve's do). Torch uses ``OMP_NUM_THREADS`` threads (the benchmark sets 1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import bentoml  # type: ignore[import-not-found]  # only in .venv-bentoml
import numpy as np
import torch
from starlette.applications import Starlette  # type: ignore[import-not-found]  # bentoml's
from starlette.requests import Request  # type: ignore[import-not-found]
from starlette.responses import JSONResponse  # type: ignore[import-not-found]
from starlette.routing import Route  # type: ignore[import-not-found]

_MODEL_FILE = "SERVE_BENCH_MODEL_FILE"
_MODEL_NAME = "SERVE_BENCH_MODEL_NAME"
NAME = os.environ.get(_MODEL_NAME, "digits")  # the route is fixed when the module is imported


async def _ready(request: Request) -> JSONResponse:
    return JSONResponse({"ready": True})


_HEALTH = Starlette(routes=[Route("/ready", _ready)])


@bentoml.service(  # type: ignore[untyped-decorator]
    name="serve_bench_torchscript",
    workers=1,
    logging={"access": {"enabled": False}},
)
@bentoml.asgi_app(_HEALTH, path="/v2/health")  # type: ignore[untyped-decorator]
class TorchScriptService:
    def __init__(self) -> None:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        model_file = Path(os.environ[_MODEL_FILE])
        self.module = torch.jit.load(str(model_file), map_location="cpu").eval()  # type: ignore[no-untyped-call]
        transform = json.loads((model_file.parent / "transform.json").read_text())
        self.classes = [str(c) for c in transform["classes"]]

    @bentoml.api(route=f"/v2/models/{NAME}/infer")  # type: ignore[untyped-decorator]
    async def infer(self, inputs: list[dict[str, Any]], id: str | None = None) -> dict[str, Any]:
        tensor = inputs[0]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        if x.ndim == 1:
            x = x.reshape(1, -1)
        with torch.inference_mode():
            probs = torch.softmax(self.module(torch.from_numpy(x)), dim=1).numpy()
        labels = [self.classes[i] for i in probs.argmax(axis=1).tolist()]
        return {
            "model_name": NAME,
            "id": id or str(uuid.uuid4()),
            "outputs": [
                {"name": "label", "shape": [len(labels)], "datatype": "BYTES", "data": labels},
                {
                    "name": "probabilities",
                    "shape": list(probs.shape),
                    "datatype": "FP32",
                    "data": probs.ravel().tolist(),
                },
            ],
        }


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model-file", required=True, type=Path, help="TorchScript model.ts")
    parser.add_argument("--name", default="digits", help="model name in the URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", required=True, type=int, help="HTTP port")
    return parser.parse_args()


def main() -> None:
    args = _args()
    here = Path(__file__).resolve().parent
    os.environ[_MODEL_FILE] = str(args.model_file.resolve())
    os.environ[_MODEL_NAME] = args.name
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")  # no usage report from a benchmark
    cmd = [
        *(sys.executable, "-m", "bentoml", "serve", f"{Path(__file__).stem}:TorchScriptService"),
        *("--working-dir", str(here), "--host", args.host, "--port", str(args.port)),
    ]
    os.execv(sys.executable, cmd)  # same process: the benchmark's SIGTERM reaches bentoml


if __name__ == "__main__":
    main()
