"""A bare FastAPI + uvicorn v2 endpoint serving a datawheel TorchScript export.

The baseline of ``benchmarks/serve_bench.py``: the few lines a person writes by hand, with
no serving framework. Run with the interpreter of ``benchmarks/.venv-kserve`` (kserve brings
fastapi, uvicorn, uvloop and httptools; the main venv has no FastAPI):

    benchmarks/.venv-kserve/bin/python benchmarks/_fastapi_server.py \\
        --model-file STORE/models/digits/versions/v1/model.ts --name digits --port 8080

POST /v2/models/NAME/infer: the body parsed with orjson -> the first input's ``data`` as a
float32 array of its ``shape`` -> forward pass -> softmax -> an orjson-encoded response with the
same v2 outputs as the KServe server (``label`` BYTES, ``probabilities`` FP32). No pydantic
request model (its validation would cost more than the model); orjson (which kserve and
datawheel both use) rather than the stdlib json of ``request.json()``/``JSONResponse``, so the
baseline is a fast hand-written server, not a slow one. GET /v2/health/ready answers
``{"ready": true}``. One uvicorn worker (uvloop + httptools, picked by uvicorn's "auto"), access
log off.
"""

# No ``from __future__ import annotations``: FastAPI must resolve the endpoint annotations
# (``Request``, imported inside main()) at decoration time.
import argparse
import json
import uuid
from pathlib import Path
from typing import Any


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model-file", required=True, type=Path, help="TorchScript model.ts")
    parser.add_argument("--name", default="digits", help="model name in the URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", required=True, type=int, help="HTTP port")
    return parser.parse_args()


def main() -> None:
    args = _args()

    import numpy as np
    import orjson  # type: ignore[import-not-found]  # only in .venv-kserve
    import torch
    import uvicorn
    from fastapi import FastAPI, Request, Response  # type: ignore[import-not-found]

    module = torch.jit.load(str(args.model_file), map_location="cpu")  # type: ignore[no-untyped-call]
    module = module.eval()
    transform = json.loads((args.model_file.parent / "transform.json").read_text())
    classes = [str(c) for c in transform["classes"]]
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    def _json(doc: Any, status: int = 200) -> Response:
        return Response(orjson.dumps(doc), status_code=status, media_type="application/json")

    @app.get("/v2/health/ready")  # type: ignore[untyped-decorator]
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v2/models/{name}/infer")  # type: ignore[untyped-decorator]
    async def infer(name: str, request: Request) -> Response:
        if name != args.name:
            return _json({"error": f"model {name!r} not found"}, status=404)
        body = orjson.loads(await request.body())
        tensor = body["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        if x.ndim == 1:
            x = x.reshape(1, -1)
        with torch.inference_mode():
            probs = torch.softmax(module(torch.from_numpy(x)), dim=1).numpy()
        labels = [classes[i] for i in probs.argmax(axis=1).tolist()]
        return _json(
            {
                "model_name": name,
                "id": body.get("id") or str(uuid.uuid4()),
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
        )

    uvicorn.run(app, host=args.host, port=args.port, workers=1, access_log=False, log_level="info")


if __name__ == "__main__":
    main()
