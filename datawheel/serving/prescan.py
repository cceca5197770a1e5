"""A bound on what a JSON body may cost to parse, checked on the bytes as they arrive.

orjson parses fast, but it builds one Python object per JSON list, object and value, on
the event-loop thread. A legal 4 MiB body of one-element lists (``[[[[0]]]],...``) is two
million lists: about 0.7 s of parsing, during which no other request, health probe or
timer runs. A nesting-depth cap does not help (depth 8 costs as much as depth 1000; it is
the count that matters), so :class:`JsonBudget` counts instead: while the body is read,
each chunk's ``[``, ``{`` and ``,`` are counted in C (``bytes.count``, about 1 ms per MiB
in all), and a body with more containers or values than a well-formed request can need
is refused before it is parsed, usually at its first chunk. Counts include brackets and
commas inside strings, which is why the budgets keep generous slack.

An infer request needs one list per row plus a handful (the document, ``inputs``, the
tensor, ``shape``, ``outputs``, ``parameters``) and one comma per value plus a handful, so
its budget is ``max_rows + 64`` containers and ``max_rows x features + 1024`` commas, plus
a few per feature for named inputs (each its own tensor object).
"""

from __future__ import annotations

from datawheel.serving.protocol import ProtocolError

__all__ = ["CONTAINER_SLACK", "VALUE_SLACK", "JsonBudget", "json_head_size"]

CONTAINER_SLACK = 64  # lists/objects beyond one per row: the document's own structure, ids
VALUE_SLACK = 1024  # commas beyond one per value: keys, outputs, parameters, commas in strings


def json_head_size(headers: list[tuple[bytes, bytes]]) -> int | None:
    """How many leading bytes of the body are JSON: all (None), or the binary-tensor header's
    value (0 when it is not a number: the parser refuses it with a clear message)."""
    for key, value in headers:
        if key == b"inference-header-content-length":
            return int(value) if value.isdigit() and len(value) < 19 else 0
    return None


class JsonBudget:
    """Counts JSON containers and commas in the first ``head_bytes`` of a body, chunk by
    chunk, and raises :class:`ProtocolError` as soon as either exceeds its budget."""

    def __init__(
        self,
        *,
        containers: int,
        commas: int,
        what: str,
        hint: str = "",
        head_bytes: int | None = None,
    ) -> None:
        self.max_containers, self.max_commas, self.what, self.hint = containers, commas, what, hint
        self._left = head_bytes
        self._containers = self._commas = 0

    @classmethod
    def for_infer(cls, *, max_rows: int, n_features: int, head_bytes: int | None) -> JsonBudget:
        return cls(  # named inputs: a tensor object, its shape, data and parameters each
            containers=max_rows + CONTAINER_SLACK + 4 * n_features,
            commas=max_rows * n_features + VALUE_SLACK + 8 * n_features,
            what=f"an infer request of at most {max_rows} rows x {n_features} features",
            hint=" (one list per row); send each row as one flat list of numbers",
            head_bytes=head_bytes,
        )

    def feed(self, chunk: bytes) -> None:
        if self._left is not None:
            if self._left <= 0:
                return
            if len(chunk) > self._left:
                chunk = chunk[: self._left]
            self._left -= len(chunk)
        self._containers += chunk.count(b"[") + chunk.count(b"{")
        self._commas += chunk.count(b",")
        if self._containers > self.max_containers:
            raise ProtocolError(
                400,
                f"the body has more than {self.max_containers} JSON lists and objects, more "
                f"than {self.what} needs{self.hint}",
            )
        if self._commas > self.max_commas:
            raise ProtocolError(
                413,
                f"the body holds more than {self.max_commas} values, more than {self.what} "
                "can carry; split the batch",
            )
