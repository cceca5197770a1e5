"""Real models in a real store, and `datawheel serve` as a real process, for serving tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datawheel import registry
from datawheel.orchestration.ingest import ingest_step
from datawheel.orchestration.prep import prep_step
from datawheel.orchestration.register import register_step
from datawheel.orchestration.train import train_step
from datawheel.orchestration.validate import validate_step
from datawheel.storage import LocalStore

DATAWHEEL = str(Path(sys.executable).with_name("datawheel"))


class _Sink:
    def log_metric(self, metric: str, value: float) -> None:
        pass


#: The variants the serving tests run on (datawheel serve --variant).
VARIANTS = ("torchscript", "onnx", "onnx-int8", "student")


def build_model_store(root: Path, versions: int = 2, epochs: int = 4) -> str:
    """A store with digits models v1..vN trained by the pipeline's own steps; v1 is champion.

    Every version has all four variants: the train step's model.ts, model.onnx and
    model_int8.onnx, and a stand-in student.onnx (a copy of model.onnx: what serving needs
    of a student is a file of the same interface listed in the card)."""
    uri = f"file://{root}"
    os.environ.setdefault("DATAWHEEL_CHECKPOINT_DIR", str(root.parent / "ckpt"))
    ingest_step(uri, "digits", "", "label", 16, str(root.parent / "manifest.json"))
    dv = json.loads((root.parent / "manifest.json").read_text())
    validate_step(uri, "digits", dv["version"], str(root.parent / "validation.md"))  # commits it
    splits = root.parent / "splits"
    prep_step(uri, "digits", dv["version"], 0, str(splits))
    evaluation = json.dumps({"metrics": {}, "extra": {}, "decision": "promote", "reason": "test"})
    for i in range(versions):
        model_dir = root.parent / f"model-{i}"
        train_step(
            str(splits),
            str(model_dir),
            _Sink(),
            model_kind="mlp",
            epochs=epochs,
            batch_size=64,
            learning_rate=1e-3 * (i + 1),
            seed=i,
        )
        shutil.copyfile(model_dir / "model.onnx", model_dir / "student.onnx")
        register_step(
            uri, "digits", str(model_dir), "digits", dv["version"], evaluation, "challenger"
        )
    registry.promote(LocalStore(root), "digits", "v1", alias="champion")
    return uri


def copy_store(template: str, dest: Path) -> str:
    """A private copy of the session's model store, for anything that writes to it.

    The ``model_store`` fixture is shared by the whole session: a server started on it
    directly leaves its ledger (and its prediction-id key) there for every later test."""
    shutil.copytree(template.removeprefix("file://"), dest)
    return f"file://{dest}"


def variant_file(variant: str) -> str:
    return {
        "torchscript": "model.ts",
        "onnx": "model.onnx",
        "onnx-int8": "model_int8.onnx",
        "student": "student.onnx",
    }[variant]


def reference_probabilities(
    store: str, rows: np.ndarray, version: str = "v1", variant: str = "torchscript"
) -> np.ndarray:
    """What ``variant`` of ``digits:version`` answers for ``rows``, computed from its file in
    the (local) store by its runtime directly, not by the server's code."""
    folder = Path(store.removeprefix("file://"), "models/digits/versions", version)
    path = folder / variant_file(variant)
    if variant == "torchscript":
        import torch

        from datawheel.training.export import load_exported

        with torch.inference_mode():
            return np.asarray(torch.softmax(load_exported(path)(torch.from_numpy(rows)), 1))
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = np.asarray(session.run(["logits"], {"input": rows})[0], np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True), np.float32)


def rewrite_card(store: str, version: str, change: Any) -> None:
    """Edit ``digits:version``'s card in a private (local) store copy: ``change(card)``, as a
    version registered otherwise would have it (the files it lists, serving_variant)."""
    path = Path(store.removeprefix("file://"), "models/digits/versions", version, "card.json")
    card = json.loads(path.read_text())
    change(card)
    path.write_text(json.dumps(card))


def digits_rows(n: int = 32, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (np.asarray(data.data, np.float32) / 16.0)[offset : offset + n]
    return x, np.asarray(data.target)[offset : offset + n]


def wait_ready(
    proc: subprocess.Popen[str], url: str, log: Any, what: str, timeout: float = 60
) -> None:
    """Wait until ``url`` answers 200; RuntimeError with ``log()`` if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}: {log()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not get ready: {log()}")


def table_model_store(
    root: Path, frame: Any, name: str, label: str, *, epochs: int, batch_size: int = 32
) -> str:
    """A store with model ``name`` v1 (champion), an MLP trained by the pipeline's own steps
    on the table ``frame`` (its ``label`` column the class)."""
    uri, work = f"file://{root}", root.parent
    os.environ.setdefault("DATAWHEEL_CHECKPOINT_DIR", str(work / "ckpt"))
    frame.to_csv(work / f"{name}.csv", index=False)
    ingest_step(uri, str(work / f"{name}.csv"), name, label, 16, str(work / "m.json"))
    dv = json.loads((work / "m.json").read_text())
    validate_step(uri, name, dv["version"], str(work / "validation.md"))
    prep_step(uri, name, dv["version"], 0, str(work / "splits"))
    train_step(
        str(work / "splits"), str(work / "model"), _Sink(), model_kind="mlp", epochs=epochs,
        batch_size=batch_size, learning_rate=1e-2, seed=0,
    )  # fmt: skip
    evaluation = json.dumps({"metrics": {}, "extra": {}, "decision": "promote", "reason": "test"})
    register_step(uri, name, str(work / "model"), name, dv["version"], evaluation, "challenger")
    registry.promote(LocalStore(root), name, "v1", alias="champion")
    return uri


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    store: str
    spool_dir: Path
    model: str = "digits"
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[str] | None = None
    log_path: Path | None = None
    variant: str = ""  # --variant; "" leaves the server's default (auto)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> ServerProcess:
        self.port = self.port or free_port()
        self.log_path = self.spool_dir.parent / f"server-{self.port}.log"
        cmd = [
            DATAWHEEL,
            "serve",
            "--model",
            self.model,
            "--store",
            self.store,
            "--port",
            str(self.port),
            "--spool-dir",
            str(self.spool_dir),
            *(("--variant", self.variant) if self.variant else ()),
            *self.args,
        ]
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env={**os.environ, **self.env}
        )
        wait_ready(self.proc, f"{self.url}/v2/health/ready", self.log, "server", timeout)
        return self

    def log(self) -> str:
        return self.log_path.read_text()[-3000:] if self.log_path else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.loads(r.read())

    def post(
        self, path: str, body: bytes | dict[str, Any], headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else {}

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            return str(r.read().decode())


def infer_body(rows: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "input",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.reshape(-1).tolist(),
            }
        ],
        **extra,
    }
