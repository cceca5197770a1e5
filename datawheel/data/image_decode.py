"""The one image decode: file or bytes -> the float32 pixel row a model was trained on.

The image-folder loader (:mod:`datawheel.data.sources`) and the model server's ``image``
input (:mod:`datawheel.serving.inputs`) both call :func:`image_row`, so an image sent to
the server is decoded, converted, resized and scaled exactly as training did:

1. open, refusing a decompression bomb (more than :data:`MAX_PIXELS` pixels, checked on
   the header before any pixel is decoded) and anything that is not an image;
2. apply the EXIF orientation (a phone photo is upright as it is shown);
3. convert to ``L`` (grayscale, 1 channel) or ``RGB`` (3 channels);
4. resize to ``width x height`` with bilinear resampling (PIL's, with its antialiasing);
5. scale by 1/255 to 0..1 and flatten channel-first (C, H, W), row-major.

:class:`Preprocessing` says all of that as data, for a model's metadata.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "GRAY_MODES",
    "MAX_PIXELS",
    "ImageError",
    "Preprocessing",
    "image_row",
    "open_image",
]

MAX_PIXELS = 50_000_000  # 8660 x 5773: a 48-megapixel photo passes, a 20000 x 20000 bomb not
GRAY_MODES = frozenset(("1", "L", "LA", "I", "I;16", "F"))  # modes that train as 1 channel


class ImageError(ValueError):
    """An input that is not a usable image: unreadable, a bomb (``too_large``), another format."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model's input row."""

    mode: str  # "L" (1 channel) or "RGB" (3 channels)
    height: int
    width: int
    resize: str = "bilinear"
    scale: float = 1.0 / 255.0

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    @classmethod
    def for_shape(cls, image_shape: list[int] | tuple[int, ...]) -> Preprocessing:
        """The preprocessing of a model trained on images of shape (channels, height, width)."""
        channels, height, width = (int(d) for d in image_shape)
        return cls("L" if channels == 1 else "RGB", height, width)

    def describe(self) -> dict[str, Any]:
        """The steps as JSON, for a model's metadata."""
        return {
            "channels": self.channels,
            "height": self.height,
            "width": self.width,
            "mode": self.mode,
            "resize": self.resize,
            "scale": "1/255",
            "steps": [
                "decode (PNG or JPEG)",
                "apply the EXIF orientation",
                f"convert to PIL mode {self.mode}",
                f"resize to {self.width}x{self.height} ({self.resize}, PIL)",
                "divide by 255 (0..1)",
                f"flatten channel-first ({self.channels}, {self.height}, {self.width}) row-major",
            ],
            "max_pixels": MAX_PIXELS,
        }


def open_image(
    source: bytes | Path, *, formats: tuple[str, ...] | None = None, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """Decode an image fully (into memory, file closed), upright per its EXIF orientation.

    Raises :class:`ImageError` for what is not an image of ``formats`` (None: any PIL
    reads) and for more than ``max_pixels`` pixels: the header is checked before decoding.
    """
    what = f"{str(source)!r}" if isinstance(source, Path) else "the image"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            fp = io.BytesIO(source) if isinstance(source, bytes) else source
            with Image.open(fp, formats=formats) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise ImageError(
                        f"{what} is {width} x {height} = {width * height} pixels, more than the "
                        f"limit of {max_pixels} (a decompression bomb?)",
                        too_large=True,
                    )
                im.load()
                return ImageOps.exif_transpose(im) or im
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))  # PIL's own check, at open
        count = f"{found.group(1)} pixels" if found else "more pixels"
        raise ImageError(
            f"{what} has {count}, more than the limit of {max_pixels} (a decompression bomb?)",
            too_large=True,
        ) from exc
    except UnidentifiedImageError as exc:
        kinds = " or ".join(formats) if formats else "an image PIL can read"
        raise ImageError(f"{what} is not {kinds}") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt data
        raise ImageError(f"{what} is truncated or corrupt ({' '.join(str(exc).split())})") from exc


def image_row(im: Image.Image, prep: Preprocessing) -> np.ndarray:
    """The float32 row [channels x height x width] of an opened image, as training made it."""
    pixels = np.asarray(
        im.convert(prep.mode).resize((prep.width, prep.height), Image.Resampling.BILINEAR),
        np.float32,
    )
    row = pixels.reshape(prep.height, prep.width, prep.channels).transpose(2, 0, 1).reshape(-1)
    return row / np.float32(255.0)
