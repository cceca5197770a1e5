"""The model server's v2 API, as the studio calls it: metadata, infer and feedback.

Blocking ``urllib`` calls, run off the event loop by the callers (``run_in_threadpool``).
A server that answers 4xx has its message passed on with its status; one that cannot be
reached, or answers 5xx, is a 502 with the address and what to check.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from starlette.exceptions import HTTPException

__all__ = ["ServeClient"]

_TIMEOUT_S = 30.0


class ServeClient:
    def __init__(self, base_url: str, model: str, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._token = token

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        if self._token:
            request.add_header("authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            message = _error_message(exc)
            if 400 <= exc.code < 500:
                raise HTTPException(exc.code, f"model server: {message}") from None
            raise HTTPException(502, f"model server answered {exc.code}: {message}") from None
        except (OSError, ValueError) as exc:
            raise HTTPException(
                502,
                f"cannot reach the model server at {self.base_url} ({exc}); check that "
                "`datawheel serve` runs there, or start the studio with the right --serve-url",
            ) from None

    def metadata(self) -> dict[str, Any]:
        doc: dict[str, Any] = self._call("GET", f"/v2/models/{self.model}")
        return doc

    def infer(self, body: dict[str, Any]) -> dict[str, Any]:
        doc: dict[str, Any] = self._call("POST", f"/v2/models/{self.model}/infer", body)
        return doc

    def feedback(self, prediction_id: str, label: str) -> dict[str, Any]:
        doc: dict[str, Any] = self._call(
            "POST", f"/v2/models/{self.model}/feedback", {"id": prediction_id, "label": label}
        )
        return doc


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        doc = json.loads(exc.read() or b"{}")
    except (OSError, ValueError):
        return exc.reason if isinstance(exc.reason, str) else str(exc.code)
    return str(doc.get("error", doc)) if isinstance(doc, dict) else str(doc)
