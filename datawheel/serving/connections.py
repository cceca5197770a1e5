"""Connection limits the HTTP server enforces: header and body read timeouts and a cap.

uvicorn closes a keep-alive connection that stays idle between requests
(``timeout_keep_alive``), but every byte received resets that timer and nothing bounds
how long a request may take to arrive: a client trickling its headers or its body holds
a connection, and a file descriptor, for ever. Its ``limit_concurrency`` answers
text/plain 503 above a count of connections and tasks, health probes included. So
:func:`guarded_protocol` builds a small subclass of uvicorn's httptools protocol:

- **header timeout**: a request's headers must be complete within ``header_timeout_s`` of
  the connection opening (or of the request's first byte, on a reused connection);
- **body timeout**: its body must be complete within ``body_timeout_s`` of the headers.
  Either way the client gets ``408 {"error": ...}`` (if no answer has started) and the
  connection is closed;
- **connection cap**: a request on a connection opened while ``cap`` others were open is
  answered ``503 {"error": ...}`` with ``Connection: close`` and ``Retry-After: 1``,
  except the health probes and ``/metrics``, which are always answered. Connections beyond
  twice the cap (plus a reserve for probes), or that would leave fewer than
  :data:`RESERVED_FDS` descriptors for the rest of the process, are closed at once, so the
  store client, the ledger and the alias watcher always have descriptors left.

:func:`raise_open_files_limit` lifts the soft ``RLIMIT_NOFILE`` to the hard limit at start
(the soft default is often 1024), and :func:`connection_cap` fits the cap under it.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from datawheel.serving.protocol import error_body

__all__ = [
    "PROBE_RESERVE",
    "RESERVED_FDS",
    "ConnectionLimits",
    "connection_cap",
    "guarded_protocol",
    "raise_open_files_limit",
]

log = logging.getLogger("datawheel.serve")
RESERVED_FDS = 128  # store client pool, ledger log and segments, model files, logs, threads
PROBE_RESERVE = 64  # connections accepted beyond the cap, so probes and 503s get through
_ALWAYS_ANSWERED = frozenset((b"/v2/health/live", b"/v2/health/ready", b"/metrics"))


@dataclass(frozen=True)
class ConnectionLimits:
    """How many client connections stay open, and how long a request may take to arrive."""

    # Each connection a client trickles into wakes the event loop: on 2 CPUs, 256 slow
    # clients keep a bystander's p99 within 2x (1.9x), 900 do not (4.7x); see attack_bench.
    max_connections: int = 256
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard limit; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return int(soft if soft != resource.RLIM_INFINITY else target)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):  # a platform that refuses: keep what we have
        return int(soft)
    return int(target)


def connection_cap(requested: int, open_files: int) -> tuple[int, int]:
    """``(cap, hard)``: the connection cap (at most ``requested``) and the count beyond which
    connections are closed on accept, both leaving :data:`RESERVED_FDS` descriptors free."""
    room = max(2, open_files - RESERVED_FDS)
    cap = max(1, min(requested, room - PROBE_RESERVE))
    return cap, min(room, 2 * cap + PROBE_RESERVE)


def _http_error(status: int, reason: bytes, message: str) -> bytes:
    body = error_body(message)
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n" % (status, reason, len(body))
    ) + body


def guarded_protocol(limits: ConnectionLimits, *, open_files: int) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the timeouts and the cap of ``limits``."""
    cap, hard = connection_cap(limits.max_connections, open_files)
    if cap < limits.max_connections:
        log.warning(
            "connection cap lowered from %d to %d: %d open files allowed (ulimit -n), %d kept "
            "for the store and the ledger",
            limits.max_connections,
            cap,
            open_files,
            RESERVED_FDS,
        )
    header_s, body_s = limits.header_timeout_s, limits.body_timeout_s
    busy_body = error_body(f"the server has its limit of {cap} connections open; retry shortly")
    busy_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(busy_body)).encode()),
        (b"connection", b"close"),
        (b"retry-after", b"1"),
    ]

    async def answer_busy(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": busy_headers})
        await send({"type": "http.response.body", "body": busy_body})

    class GuardedProtocol(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        _over_cap = False
        _began = False  # a request's first byte has arrived

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            open_now = len(self.connections)
            if open_now > hard:  # the last line: keep descriptors for the store and ledger
                transport.close()
                return
            self._over_cap = open_now > cap
            self._arm(header_s, "headers")

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._began = True
            if self._timer is None:  # the first request keeps the timer armed on connect
                self._arm(header_s, "headers")

        def on_headers_complete(self) -> None:
            self._disarm()
            if self._over_cap and httptools.parse_url(self.url).path not in _ALWAYS_ANSWERED:
                self.app = answer_busy
            super().on_headers_complete()
            self._arm(body_s, "body")

        def on_message_complete(self) -> None:
            self._disarm()
            self._began = False
            super().on_message_complete()

        def _arm(self, seconds: float, part: str) -> None:
            self._disarm()
            self._timer = self.loop.call_later(seconds, self._expired, seconds, part)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expired(self, seconds: float, part: str) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            if self._began and (self.cycle is None or not self.cycle.response_started):
                self.transport.write(
                    _http_error(
                        408,
                        b"Request Timeout",
                        f"the request {part} did not arrive within {seconds:g} s",
                    )
                )
            self.transport.close()

    return GuardedProtocol
