"""What makes two registered models the same model: their weights and their transform.

``model.ts`` cannot say: TorchScript writes a random serialization id and orders some
constants by hash, so exporting the same weights twice gives different bytes. The identity
is instead the SHA-256 of what the served model is made of:

- ``model.pt``, the state dict, member by member without its ``serialization_id``;
- ``transform.json`` (features, classes, standardization, categories) as canonical JSON.

A model directory without ``model.pt`` (a hand-made export) falls back to ``model.ts``'s
bytes, so its identity is its checksum as before.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["IDENTITY_FILES", "model_identity"]

IDENTITY_FILES = ("model.pt", "transform.json")
_VOLATILE = ".data/serialization_id"  # torch.save's per-write id: not part of the content


def model_identity(files: Mapping[str, Path]) -> str:
    """The hex identity of the model whose files (name -> local path) are ``files``."""
    digest = hashlib.sha256(b"datawheel-model-identity-1\n")
    weights = files.get("model.pt") or files["model.ts"]
    digest.update(f"weights {weights.name}\n".encode())
    _weights(digest, weights)
    if "transform.json" in files:
        digest.update(b"transform\n")
        digest.update(_canonical_json(files["transform.json"].read_bytes()))
    return digest.hexdigest()


def _weights(digest: hashlib._Hash, path: Path) -> None:
    if path.name == "model.pt" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for member in sorted(archive.namelist()):
                if member.endswith(_VOLATILE):
                    continue
                digest.update(f"{member.split('/', 1)[-1]}\0".encode())  # archive/ may be renamed
                digest.update(hashlib.sha256(archive.read(member)).digest())
        return
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)


def _canonical_json(data: bytes) -> bytes:
    try:
        return json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError):
        return data  # not JSON: its bytes are its identity
