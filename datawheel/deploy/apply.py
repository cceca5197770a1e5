"""``kubectl apply`` of a rendered overlay, after checking that a cluster answers."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from datawheel.deploy.manifests import kubectl, render
from datawheel.errors import DatawheelError

__all__ = ["ApplyResult", "apply", "cluster_reachable"]


@dataclass(frozen=True)
class ApplyResult:
    overlay: str
    output: str  # kubectl's lines: "deployment.apps/datawheel-serve configured", ...


def _context_args(context: str | None, kubeconfig: str | None) -> list[str]:
    args: list[str] = []
    if kubeconfig:
        args += ["--kubeconfig", kubeconfig]
    if context:
        args += ["--context", context]
    return args


def cluster_reachable(
    binary: str = "kubectl",
    *,
    context: str | None = None,
    kubeconfig: str | None = None,
    timeout_s: int = 10,
) -> None:
    """Raise a clear error unless the API server answers (``kubectl version``)."""
    cmd = [kubectl(binary), *_context_args(context, kubeconfig)]
    cmd += ["version", "-o", "json", f"--request-timeout={timeout_s}s"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or '"serverVersion"' not in done.stdout:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        detail = lines[-1].strip()[:300] if lines else "no server version in the answer"
        raise DatawheelError(
            f"no Kubernetes cluster is reachable ({detail})",
            "point kubectl at a cluster (KUBECONFIG, --kubeconfig or --context) and check "
            "that `kubectl cluster-info` answers",
        )


def apply(
    overlay: str,
    *,
    binary: str = "kubectl",
    context: str | None = None,
    kubeconfig: str | None = None,
    extra_args: Sequence[str] = (),
) -> ApplyResult:
    """Render ``overlay`` and apply it with ``kubectl apply -f -``."""
    manifests = render(overlay, binary=binary)
    cluster_reachable(binary, context=context, kubeconfig=kubeconfig)
    cmd = [kubectl(binary), *_context_args(context, kubeconfig), "apply", "-f", "-", *extra_args]
    done = subprocess.run(cmd, input=manifests, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        detail = " ".join(done.stderr.split())[-400:] or f"exit status {done.returncode}"
        raise DatawheelError(
            f"kubectl apply of overlay {overlay!r} failed: {detail}",
            "read kubectl's message above; `datawheel deploy render --overlay "
            f"{overlay}` shows what was sent",
        )
    return ApplyResult(overlay, done.stdout)
