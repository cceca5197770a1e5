"""What the canary tests share: load (and feedback) driven at real servers, the servers,
the fake Kubernetes client, and honest bad versions of v2 registered as the candidate."""

from __future__ import annotations

import shutil
import threading
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from fake_kube import FakeKube
from serving_support import ServerProcess, digits_rows, infer_body

from datawheel import registry
from datawheel.deploy.kube import KubeDeployments
from datawheel.deploy.prom import Prometheus, observe
from datawheel.storage import LocalStore

MIN_REQUESTS = 20
WINDOW = "4s"


def local_store(store_uri: str) -> LocalStore:
    return LocalStore(store_uri.removeprefix("file://"))


def register_wrapped_version(store_uri: str, work: Path, wrapper: type[torch.nn.Module]) -> str:
    """v2's TorchScript wrapped in ``wrapper``, registered and made the candidate (its card
    says the evaluation promoted it against the champion v1, as v2's does)."""
    store = local_store(store_uri)
    v2 = registry.resolve(store, "digits", "v2")
    src = registry.fetch(store, v2, work / "v2", only=("model.ts", "transform.json"))
    out = work / wrapper.__name__
    out.mkdir()
    shutil.copy(src / "transform.json", out / "transform.json")
    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; datawheel serves it
        warnings.simplefilter("ignore", DeprecationWarning)
        inner = torch.jit.load(str(src / "model.ts"))  # type: ignore[no-untyped-call]
        scripted = torch.jit.script(wrapper(inner))  # type: ignore[no-untyped-call]
    scripted.save(str(out / "model.ts"))  # type: ignore[no-untyped-call]
    card = {k: v2.card[k] for k in ("dataset", "dataset_version", "metrics", "model_kind")}
    card.update(decision="promote", evaluated_against="v1")
    mv = registry.register(store, "digits", out, card=card)
    registry.promote(store, "digits", mv.version, alias="candidate")
    return mv.version


class Load:
    """Threads posting one real digit row per request to a server until stopped; with
    ``feedback``, each prediction then gets its true label through the feedback API, and
    the threads count what they saw (``labels``, ``correct``) to check Prometheus by."""

    def __init__(self, server: ServerProcess, threads: int = 2, feedback: bool = False) -> None:
        self.server = server
        self.feedback = feedback
        self.codes: Counter[int] = Counter()
        self.labels = 0
        self.correct = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, seed: int) -> None:
        rows, truth = digits_rows(200, offset=seed * 200)
        i = 0
        while not self._stop.is_set():
            code, doc = self.server.post("/v2/models/digits/infer", infer_body(rows[i : i + 1]))
            self.codes[code] += 1
            if self.feedback and code == 200:
                pid = doc["parameters"]["prediction_ids"][0]
                label = str(truth[i])
                fb, _ = self.server.post("/v2/models/digits/feedback", {"id": pid, "label": label})
                if fb == 200:
                    with self._lock:
                        self.labels += 1
                        self.correct += doc["outputs"][0]["data"][0] == label
            i = (i + 1) % len(rows)
            time.sleep(0.005)

    @property
    def accuracy(self) -> float:
        return self.correct / self.labels if self.labels else float("nan")

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


def start_servers(store_uri: str, tmp_path: Path, canary_ref: str) -> list[ServerProcess]:
    """Stable follows digits@champion (and hot-swaps quickly); canary pins ``canary_ref``."""
    servers = [
        ServerProcess(store_uri, tmp_path / "spool-stable", args=["--poll-seconds", "0.5"]),
        ServerProcess(store_uri, tmp_path / "spool-canary", model=canary_ref),
    ]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda s: s.start(), servers))
    return servers


def deployments(fake: FakeKube) -> KubeDeployments:
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = fake.url
    return KubeDeployments(client.ApiClient(cfg), fake.namespace)


def wait_for_traffic(prom: Prometheus, versions: list[str], timeout: float = 30) -> None:
    """Until Prometheus has seen enough inference requests of every version to judge."""
    deadline = time.monotonic() + timeout
    while True:
        seen = {v: observe(prom, "digits", v, WINDOW).requests for v in versions}
        if all(n >= MIN_REQUESTS for n in seen.values()):
            return
        assert time.monotonic() < deadline, f"Prometheus saw too little traffic: {seen}"
        time.sleep(0.5)
