"""LitServe (Lightning AI) serving a datawheel TorchScript export on the v2 infer route.

Run by ``benchmarks/serve_bench.py`` with the interpreter of its own virtual environment
(``benchmarks/.venv-litserve``: torch 2.13.0 CPU, then ``litserve`` 0.2.x); the main venv
has no litserve.

    benchmarks/.venv-litserve/bin/python benchmarks/_litserve_server.py \\
        --model-file STORE/models/digits/versions/v1/model.ts --name digits --port 8080

What it serves:

* ``POST /v2/models/NAME/infer`` (the ``LitAPI``'s ``api_path``): ``decode_request`` takes
  the v2 body's first input's ``data`` as a float32 array of its ``shape``; ``predict`` runs
  ``model.ts`` (``torch.jit.load``; it takes raw features and normalizes itself) and a
  softmax; ``encode_response`` returns the same v2 outputs as the KServe server (``label``
  BYTES, ``probabilities`` FP32);
* ``GET /v2/health/ready``: LitServe's own health check (``healthcheck_path``), 200 once the
  inference worker has loaded the model, 503 before.

Settings, to match the other servers (one worker, one torch thread, no batching):
``accelerator="cpu", devices=1, workers_per_device=1`` (one inference worker process) and
``num_api_servers=1`` (one uvicorn process in front of it); LitServe's dynamic batching is
OFF by default (``max_batch_size=1``, its default: one request, one model call, as kserve and
fastapi). ``--max-batch-size N --batch-timeout-ms T`` turn it on (serve_bench's
``--litserve-batching`` passes datawheel's 64 rows and 2 ms): LitServe then gathers up to N
requests, waiting up to T for them, stacks their rows and runs one model call (each
request must then hold one row, as the benchmark's do);
``fast_queue=True`` (ZeroMQ between the uvicorn process and the worker, LitServe's own
faster transport, rather than its default multiprocessing-manager queues), so LitServe is
measured at its quickest; no request tracking, client file, or access log, log level
warning. Torch's thread count comes from ``OMP_NUM_THREADS`` (the benchmark sets 1).
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from pathlib import Path
from typing import Any

# At module level (not inside main() as in the kserve script): LitServe starts its inference
# worker with multiprocessing "spawn", which pickles the LitAPI and finds its class by name.
import litserve as ls  # type: ignore[import-not-found]  # only in .venv-litserve
import numpy as np
import torch


class TorchScriptAPI(ls.LitAPI):  # type: ignore[misc]
    def __init__(
        self, model_file: Path, name: str, threads: int, max_batch: int, timeout_ms: float
    ) -> None:
        super().__init__(
            api_path=f"/v2/models/{name}/infer",
            max_batch_size=max_batch,
            batch_timeout=timeout_ms / 1000.0,
        )
        self.batching = max_batch > 1
        self.model_file = model_file
        self.model_name = name
        self.threads = threads
        self.module: Any = None
        self.classes: list[str] = []

    def setup(self, device: str) -> None:  # in the inference worker process
        torch.set_num_threads(self.threads)
        module = torch.jit.load(str(self.model_file), map_location="cpu")  # type: ignore[no-untyped-call]
        self.module = module.eval()
        transform = json.loads((self.model_file.parent / "transform.json").read_text())
        self.classes = [str(c) for c in transform["classes"]]

    # decode_request's ``request`` and encode_response's return stay unannotated: LitServe
    # reads those annotations as the endpoint's FastAPI types; none means its default path,
    # the raw request's ``await request.json()`` in, a JSON response out.
    def decode_request(self, request, **kwargs: Any) -> Any:  # type: ignore[no-untyped-def]
        tensor = request["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        x = x.reshape(1, -1) if x.ndim == 1 else x
        if self.batching:  # LitServe's own batch() stacks one row per request
            if x.shape[0] != 1:
                raise ValueError("with --max-batch-size > 1 a request holds one row")
            return x[0]
        return x

    def predict(self, x: Any, **kwargs: Any) -> Any:
        with torch.inference_mode():
            return torch.softmax(self.module(torch.from_numpy(x)), dim=1).numpy()

    def encode_response(self, output: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        output = output.reshape(1, -1) if output.ndim == 1 else output  # a row of a batch
        labels = [self.classes[i] for i in output.argmax(axis=1).tolist()]
        return {
            "model_name": self.model_name,
            "id": str(uuid.uuid4()),
            "outputs": [
                {"name": "label", "shape": [len(labels)], "datatype": "BYTES", "data": labels},
                {
                    "name": "probabilities",
                    "shape": list(output.shape),
                    "datatype": "FP32",
                    "data": output.ravel().tolist(),
                },
            ],
        }


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model-file", required=True, type=Path, help="TorchScript model.ts")
    parser.add_argument("--name", default="digits", help="model name in the URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", required=True, type=int, help="HTTP port")
    parser.add_argument(
        "--max-batch-size", type=int, default=1, help="LitServe batching (default 1: off)"
    )
    parser.add_argument(
        "--batch-timeout-ms", type=float, default=0.0, help="LitServe batch_timeout (default 0)"
    )
    return parser.parse_args()


def main() -> None:
    args = _args()
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    server = ls.LitServer(
        TorchScriptAPI(
            args.model_file.resolve(),
            args.name,
            threads,
            args.max_batch_size,
            args.batch_timeout_ms,
        ),
        accelerator="cpu",
        devices=1,
        workers_per_device=1,
        healthcheck_path="/v2/health/ready",
        fast_queue=True,
        track_requests=False,
    )
    server.run(
        host=args.host,
        port=args.port,
        num_api_servers=1,
        log_level="warning",
        generate_client_file=False,
        access_log=False,
    )


if __name__ == "__main__":
    main()
