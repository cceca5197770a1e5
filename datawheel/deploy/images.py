"""Container images the components run in, read from the one setting: ``images.env``.

``manifests/base/images.env`` names both images. The Makefile ``include``\\ s it, kustomize
reads it (configMapGenerator + replacements), ``docker/build.sh`` builds and pushes it, and
this module reads it. An installed package finds it as ``datawheel.manifests`` package data;
a checkout finds it beside the package. ``DATAWHEEL_IMAGE`` / ``DATAWHEEL_TRAIN_IMAGE`` in the
environment override it at compile time; the checked-in compiled pipeline uses the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from datawheel.errors import DatawheelError

__all__ = [
    "CPU_IMAGE",
    "CPU_IMAGE_KEY",
    "IMAGE_REPOSITORY",
    "IMAGE_TAG",
    "TRAIN_IMAGE",
    "TRAIN_IMAGE_KEY",
    "Images",
    "find_images_env",
    "parse_images_env",
    "resolve_images",
    "split_reference",
]

CPU_IMAGE_KEY = "DATAWHEEL_IMAGE"
TRAIN_IMAGE_KEY = "DATAWHEEL_TRAIN_IMAGE"
_REQUIRED = (CPU_IMAGE_KEY, TRAIN_IMAGE_KEY)

_PACKAGE = "datawheel.manifests"
_RESOURCE = ("base", "images.env")
_CHECKOUT_FILE = Path(__file__).resolve().parents[2] / "manifests" / "base" / "images.env"

_FIX_FORMAT = "write one NAME=IMAGE:TAG per line (no spaces, quotes or `export`; # comments)"
_KEY = re.compile(r"[A-Z_][A-Z0-9_]*")
# An OCI image reference: [registry[:port]/]path[:tag][@sha256:digest]
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"(?P<repository>(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)


@dataclass(frozen=True)
class Images:
    """The CPU image (data, evaluation, registry, serving) and the CUDA training image."""

    cpu: str
    train: str


def find_images_env(package: str = _PACKAGE, checkout_file: Path = _CHECKOUT_FILE) -> Traversable:
    """The images.env in use: ``package``'s data when installed, else the checkout's file."""
    try:
        packaged: Traversable | None = resources.files(package)
    except ModuleNotFoundError:
        packaged = None
    if packaged is not None:
        candidate = packaged.joinpath(_RESOURCE[0]).joinpath(_RESOURCE[1])
        if candidate.is_file():
            return candidate
    if checkout_file.is_file():
        return checkout_file
    raise DatawheelError(
        f"the image setting images.env is missing (not in package {package}, "
        f"not at {checkout_file})",
        f"reinstall datawheel (its wheel ships {'/'.join(_RESOURCE)} as {package} package data) "
        "or restore manifests/base/images.env in the checkout",
    )


def parse_images_env(text: str, source: str = "images.env") -> dict[str, str]:
    """``KEY=VALUE`` lines (the subset Make, kustomize and bash all read the same way)."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not _KEY.fullmatch(key) or not value or re.search(r"[\s'\"#$]", value):
            raise DatawheelError(
                f"{source}:{number}: expected NAME=VALUE, got {raw!r}", _FIX_FORMAT
            )
        if key in values:
            raise DatawheelError(f"{source}:{number}: {key} is set twice", "keep one line per name")
        values[key] = value
    missing = [key for key in _REQUIRED if key not in values]
    if missing:
        raise DatawheelError(f"{source} does not set {', '.join(missing)}", _FIX_FORMAT)
    return values


def split_reference(image: str, name: str = "image") -> tuple[str, str]:
    """``(repository, tag)`` of an image reference; the tag is ``""`` when only a digest pins it."""
    match = _REFERENCE.fullmatch(image)
    if match is None:
        raise DatawheelError(
            f"{name}={image!r} is not an image reference",
            "use REGISTRY/REPOSITORY:TAG, for example ghcr.io/datawheel/datawheel:0.1.0",
        )
    return match["repository"], match["tag"] or ""


def resolve_images(
    environ: Mapping[str, str] = os.environ, env_file: Traversable | None = None
) -> Images:
    """The images from ``env_file`` (default: :func:`find_images_env`), environment first."""
    source = env_file if env_file is not None else find_images_env()
    values = parse_images_env(source.read_text(encoding="utf-8"), str(source))
    chosen = {key: environ.get(key, "").strip() or values[key] for key in _REQUIRED}
    for key, image in chosen.items():
        split_reference(image, key)
    return Images(cpu=chosen[CPU_IMAGE_KEY], train=chosen[TRAIN_IMAGE_KEY])


_IMAGES = resolve_images()
CPU_IMAGE = _IMAGES.cpu
TRAIN_IMAGE = _IMAGES.train
IMAGE_REPOSITORY, IMAGE_TAG = split_reference(CPU_IMAGE, CPU_IMAGE_KEY)
