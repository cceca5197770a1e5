"""Real image files for the image tests: digits rows as PNG/JPEG, and a real PNG bomb."""

from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np
from PIL import Image


def digit_image(row: np.ndarray, *, scale: int = 1, mode: str = "L") -> Image.Image:
    """A digits row (8x8, 0..1) as an image: 0..255 gray, ``scale`` times larger, in ``mode``."""
    pixels = np.round(np.clip(row, 0, 1) * 255).astype(np.uint8).reshape(8, 8)
    im = Image.fromarray(pixels, mode="L")
    if scale != 1:
        im = im.resize((8 * scale, 8 * scale), Image.Resampling.NEAREST)
    return im.convert(mode)


def encoded(im: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.cache
def png_bomb(side: int = 20000) -> bytes:
    """A complete, valid ``side x side`` black grayscale PNG (about 390 KB for 20000):
    decoded it would take ``side**2`` bytes (400 MB)."""
    deflate = zlib.compressobj(9)
    row = bytes(1 + side)  # filter byte 0, then the row's pixels
    idat = b"".join([deflate.compress(row) for _ in range(side)] + [deflate.flush()])
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )
