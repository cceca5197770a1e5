"""KServe's own Python ModelServer serving a datawheel TorchScript export (v2 protocol).

Run by ``benchmarks/serve_bench.py`` with the interpreter of its own virtual environment
(``benchmarks/.venv-kserve``: torch + ``kserve`` 0.21.x); the main venv has no kserve.

    benchmarks/.venv-kserve/bin/python benchmarks/_kserve_server.py \\
        --model-file STORE/models/digits/versions/v1/model.ts --name digits --port 8080

What it serves (POST /v2/models/NAME/infer, GET /v2/health/ready):

* ``load``: ``torch.jit.load`` of ``model.ts`` (it takes raw features and normalizes itself)
  and the class names from ``transform.json`` beside it;
* ``predict``: the request's first input as numpy (``InferInput.as_numpy``) -> forward pass ->
  softmax; returns a v2 ``InferResponse`` with outputs ``label`` (BYTES, class name) and
  ``probabilities`` (FP32, ``[N, n_classes]``).

``kserve.ModelServer(http_port=P, workers=1, enable_grpc=False)``: one process, one event loop,
no gRPC server (its default would also bind port 8081). kserve binds 0.0.0.0; there is no
host argument. ``--quiet`` (the benchmark's default) turns off the per-request log lines that
kserve writes by default (uvicorn's access log, and the per-request latency / timing-middleware
lines on the ``kserve.trace`` logger), so the comparison measures serving, not logging.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from pathlib import Path
from typing import Any


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model-file", required=True, type=Path, help="TorchScript model.ts")
    parser.add_argument("--name", default="digits", help="model name in the URL")
    parser.add_argument("--port", required=True, type=int, help="HTTP port")
    parser.add_argument("--quiet", action="store_true", help="no per-request log lines")
    return parser.parse_args()


def main() -> None:
    args = _args()
    # kserve.model_server parses sys.argv at import time (argparse with prefix matching):
    # hide this script's own flags from it; every setting is passed to ModelServer below.
    sys.argv = sys.argv[:1]

    import numpy as np
    import torch
    from kserve import (  # type: ignore[import-not-found]  # only in .venv-kserve
        InferOutput,
        InferRequest,
        InferResponse,
        Model,
        ModelServer,
    )

    class TorchScriptModel(Model):  # type: ignore[misc]
        def __init__(self, name: str, model_file: Path) -> None:
            super().__init__(name)
            self.model_file = model_file
            self.module: Any = None
            self.classes: list[str] = []

        def load(self) -> bool:
            module = torch.jit.load(str(self.model_file), map_location="cpu")  # type: ignore[no-untyped-call]
            self.module = module.eval()
            transform = self.model_file.parent / "transform.json"
            self.classes = [str(c) for c in json.loads(transform.read_text())["classes"]]
            self.ready = True
            return True

        def predict(
            self,
            payload: Any,
            headers: dict[str, str] | None = None,
            response_headers: dict[str, str] | None = None,
        ) -> Any:
            request: InferRequest = payload
            x = np.ascontiguousarray(request.inputs[0].as_numpy(), dtype=np.float32)
            if x.ndim == 1:
                x = x.reshape(1, -1)
            with torch.inference_mode():
                probs = torch.softmax(self.module(torch.from_numpy(x)), dim=1).numpy()
            labels = [self.classes[i] for i in probs.argmax(axis=1).tolist()]
            return InferResponse(
                response_id=request.id or str(uuid.uuid4()),
                model_name=self.name,
                infer_outputs=[
                    InferOutput(name="label", shape=[len(labels)], datatype="BYTES", data=labels),
                    InferOutput(
                        name="probabilities",
                        shape=list(probs.shape),
                        datatype="FP32",
                        data=probs.ravel().tolist(),
                    ),
                ],
            )

    model = TorchScriptModel(args.name, args.model_file)
    model.load()
    server = ModelServer(
        http_port=args.port,
        workers=1,
        enable_grpc=False,
        enable_latency_logging=not args.quiet,
    )
    if args.quiet:
        # ModelServer() configured kserve's logging; raise the per-request loggers' levels.
        for name in ("uvicorn.access", "kserve.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)
    server.start([model])


if __name__ == "__main__":
    main()
