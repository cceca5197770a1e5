"""The S3 store: ``s3://bucket/prefix`` on S3, MinIO or SeaweedFS through the ``minio`` SDK.

Every put is one ``PutObject`` (or one multipart upload for large payloads), which S3
makes visible all at once, so the store's atomic-put contract holds without temp keys.

Conditional writes are S3's own: an exclusive create is ``PutObject`` with
``If-None-Match: *`` and a compare-and-swap is ``PutObject`` with ``If-Match: <ETag>``;
a lost race is answered ``412 Precondition Failed`` (or ``409`` while another conditional
write to the key is in flight). AWS S3, MinIO and SeaweedFS (4.x, checked by the tests)
honour both headers.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import certifi
import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from datawheel.redact import redact, redact_netloc
from datawheel.storage.base import KeyNotFoundError, StoreError
from datawheel.storage.files import atomic_write
from datawheel.storage.keys import validate_key
from datawheel.storage.settings import S3Settings

__all__ = ["S3Store"]

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken"}
)
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject"})
# A conditional write that lost: the precondition failed, or a concurrent conditional
# write to the same key is still in flight (AWS answers 409 ConditionalRequestConflict).
_LOST_RACE_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
# urllib3 wraps socket/TLS failures in its own errors; local file errors must not match here.
_Headers = dict[str, str | list[str] | tuple[str]]  # minio's type for request headers
_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, ConnectionError)


def _http_client() -> urllib3.PoolManager:
    """A pool that gives up within seconds on an unreachable endpoint (minio's waits minutes)."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=3, read=30),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(
            total=2,
            backoff_factor=0.2,
            status_forcelist=[500, 502, 503, 504],
            raise_on_status=False,  # let minio parse the S3 error body of the last try
        ),
    )


def _reason(exc: BaseException) -> str:
    """A short one-line cause, e.g. 'Connection refused', out of a urllib3 error chain, with
    the credentials of any URL in it masked."""
    return redact(_raw_reason(exc))


def _raw_reason(exc: BaseException) -> str:
    if isinstance(exc, S3Error):
        return " ".join(str(exc.message).split())[:200]
    inner = getattr(exc, "reason", None) or exc
    cause = inner.__cause__ or inner.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror
    return " ".join(str(inner).split())[:200] or type(inner).__name__


class S3Store:
    """A store under ``s3://bucket/prefix``; keys map to objects ``prefix/key``."""

    def __init__(self, client: Minio, bucket: str, prefix: str, settings: S3Settings) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.settings = settings
        self._conditional_checked = False
        self.uri = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"

    @classmethod
    def from_uri(cls, uri: str, settings: S3Settings | None = None) -> S3Store:
        """Open ``s3://bucket[/prefix]``, check the endpoint and keys, create the bucket."""
        if not uri.startswith("s3://"):
            raise StoreError(f"{uri!r} is not an s3:// URI", "use s3://BUCKET/PREFIX")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not _BUCKET_RE.fullmatch(bucket):
            raise StoreError(
                f"{bucket!r} in {uri!r} is not a valid S3 bucket name",
                "use 3-63 lowercase letters, digits, '.' or '-', e.g. s3://datawheel/prod",
            )
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
        settings = settings or S3Settings.from_env()
        try:
            client = Minio(
                settings.endpoint,
                access_key=settings.access_key,
                secret_key=settings.secret_key,
                secure=settings.secure,
                region=settings.region,
                http_client=_http_client(),
            )
        except ValueError as exc:
            raise StoreError(
                f"S3 endpoint {redact_netloc(settings.endpoint)!r} is invalid: {redact(str(exc))}",
                "set DATAWHEEL_S3_ENDPOINT=host:port",
            ) from exc
        store = cls(client, bucket, prefix, settings)
        with store._errors("open bucket"):
            if not client.bucket_exists(bucket):
                try:
                    client.make_bucket(bucket, location=settings.region)
                except S3Error as exc:
                    if exc.code != "BucketAlreadyOwnedByYou":  # lost a creation race: fine
                        raise
        return store

    @contextmanager
    def _errors(self, action: str, key: str | None = None) -> Iterator[None]:
        """Turn minio/urllib3 failures into one-line :class:`StoreError`s."""
        endpoint = redact_netloc(self.settings.endpoint)
        try:
            yield
        except S3Error as exc:
            if key is not None and exc.code in _MISSING_CODES:
                raise KeyNotFoundError(f"no object {key!r} in store {self.uri}") from exc
            if exc.code in _CREDENTIAL_CODES:
                raise StoreError(
                    f"S3 rejected the credentials for {self.uri} at {endpoint} ({exc.code})",
                    "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY to a key that may read and "
                    f"write bucket {self.bucket!r}",
                ) from exc
            raise StoreError(
                f"S3 {action} failed for {self.uri} at {endpoint}: {exc.code} {_reason(exc)}",
                "check the bucket name and the S3 server's logs",
            ) from exc
        except MinioException as exc:  # InvalidResponseError, ServerError: not S3, or a 5xx
            raise StoreError(
                f"S3 endpoint {endpoint} gave an unexpected answer to {action} ({_reason(exc)})",
                "check DATAWHEEL_S3_ENDPOINT points at an S3/MinIO server, DATAWHEEL_S3_SECURE "
                "matches its http/https scheme, and the server's logs",
            ) from exc
        except _NETWORK_ERRORS as exc:
            scheme = "https" if self.settings.secure else "http"
            raise StoreError(
                f"cannot reach S3 endpoint {endpoint} over {scheme} ({_reason(exc)})",
                "check DATAWHEEL_S3_ENDPOINT (host:port), DATAWHEEL_S3_SECURE, "
                "and that the S3 server is running",
            ) from exc

    def _name(self, key: str) -> str:
        key = validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_bytes(self, key: str, data: bytes) -> None:
        name = self._name(key)
        with self._errors("put", key):
            self.client.put_object(self.bucket, name, io.BytesIO(data), len(data))

    def get_bytes(self, key: str) -> bytes:
        name = self._name(key)
        with self._errors("get", key):
            response = self.client.get_object(self.bucket, name)
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

    def exists(self, key: str) -> bool:
        name = self._name(key)
        try:
            with self._errors("stat", key):
                self.client.stat_object(self.bucket, name)
        except KeyNotFoundError:
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        sub = prefix.strip("/")
        if sub:
            validate_key(sub)
        full = "/".join(p for p in (self.prefix, sub) if p)
        start = len(self.prefix) + 1 if self.prefix else 0
        with self._errors("list"):
            objects = self.client.list_objects(
                self.bucket, prefix=f"{full}/" if full else None, recursive=True
            )
            names = [o.object_name for o in objects if not o.is_dir]
        return sorted(n[start:] for n in names if n and not n.endswith("/"))

    def delete(self, key: str) -> None:
        name = self._name(key)
        with self._errors("delete"):
            self.client.remove_object(self.bucket, name)

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        name = self._name(key)
        with open(path, "rb") as f, self._errors("put", key):
            self.client.put_object(self.bucket, name, f, os.fstat(f.fileno()).st_size)

    def get_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """Download ``key`` to ``path`` (streamed into a temp file, then renamed into place)."""
        name = self._name(key)
        with self._errors("get", key):
            response = self.client.get_object(self.bucket, name)
            try:
                atomic_write(
                    path,
                    lambda fh: [fh.write(chunk) for chunk in response.stream(1 << 20)],
                    fsync=False,
                )
            finally:
                response.close()
                response.release_conn()

    def _put_if(self, key: str, data: bytes, headers: _Headers) -> bool:
        if not self._conditional_checked:
            self._check_conditional_writes()
        return self._put_if_raw(key, data, headers)

    def _put_if_raw(self, key: str, data: bytes, headers: _Headers) -> bool:
        name = self._name(key)
        try:
            with self._errors("conditional put", key):
                try:
                    self.client._put_object(self.bucket, name, data, headers=headers)
                except S3Error as exc:
                    if exc.code in _LOST_RACE_CODES:
                        return False
                    raise
        except KeyNotFoundError:  # If-Match on a key deleted meanwhile
            return False
        return True

    def _check_conditional_writes(self) -> None:
        """Refuse a server that ignores If-None-Match (MinIO before mid-2024, for one): on it
        concurrent writers would silently overwrite each other. Checked once per store."""
        probe = f"_datawheel/conditional-probe/{uuid.uuid4().hex}"
        try:
            first = self._put_if_raw(probe, b"1", {"If-None-Match": "*"})
            second = self._put_if_raw(probe, b"2", {"If-None-Match": "*"})
        finally:
            with contextlib.suppress(StoreError):
                self.delete(probe)
        if not (first and not second):
            raise StoreError(
                f"the S3 server at {redact_netloc(self.settings.endpoint)} ignores conditional "
                "writes (PutObject with If-None-Match), so concurrent writers could overwrite each "
                "other's model versions and aliases",
                "use a server that honours them: AWS S3, SeaweedFS 3.x/4.x, or MinIO from "
                "RELEASE.2024-08 on",
            )
        self._conditional_checked = True

    def create_bytes(self, key: str, data: bytes) -> bool:
        return self._put_if(key, data, {"If-None-Match": "*"})

    def get_tagged(self, key: str) -> tuple[bytes, str]:
        name = self._name(key)
        with self._errors("get", key):
            response = self.client.get_object(self.bucket, name)
            try:
                return bytes(response.read()), str(response.headers.get("ETag", ""))
            finally:
                response.close()
                response.release_conn()

    def replace_bytes(self, key: str, data: bytes, tag: str) -> bool:
        if not tag:
            return False
        etag = tag if tag.startswith('"') else f'"{tag}"'
        return self._put_if(key, data, {"If-Match": etag})
