"""The one image decode (datawheel.data.image_decode): the loader and the server share it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from image_support import digit_image, encoded, png_bomb
from PIL import Image
from serving_support import digits_rows

from datawheel.data.image_decode import ImageError, Preprocessing, image_row, open_image
from datawheel.data.sources import load_source
from datawheel.errors import DatawheelError
from datawheel.serving.inputs import image_rows
from datawheel.serving.wire import ProtocolError


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_loader_and_server_decode_the_same_rows(tmp_path: Path, mode: str) -> None:
    rows, labels = digits_rows(6)
    files = {
        f"{label}/{i}.png": encoded(digit_image(row, scale=3, mode=mode))
        for i, (row, label) in enumerate(zip(rows, labels, strict=True))
    }
    loaded = load_source(str(_folder(tmp_path / "imgs", files)), image_size=8)
    channels = 1 if mode == "L" else 3
    assert loaded.image_shape == (channels, 8, 8)
    prep = Preprocessing.for_shape(loaded.image_shape)
    assert prep.mode == mode
    ordered = [files[k] for k in sorted(files, key=lambda k: (k.split("/")[0], k))]
    served = image_rows(ordered, prep)
    trained = loaded.frame.drop(columns="label").to_numpy(np.float32)
    np.testing.assert_array_equal(served, trained)  # bit for bit: one function
    assert served.shape == (6, channels * 64) and served.max() > 0.5


def test_a_decompression_bomb_is_refused_at_ingest_in_one_line(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", {"a/ok.png": encoded(digit_image(digits_rows(1)[0][0]))})
    (root / "a" / "bomb.png").write_bytes(png_bomb())
    with pytest.raises(DatawheelError) as info:
        load_source(str(root))
    text = str(info.value)
    assert "\n" not in text and "bomb.png" in text and "400000000 pixels" in text
    assert "decompression bomb" in text and "remove or replace the file" in text


def test_the_pixel_limit_is_checked_before_decoding() -> None:
    png = encoded(Image.new("L", (300, 200)))
    with pytest.raises(ImageError) as info:
        open_image(png, max_pixels=50_000)
    assert info.value.too_large and "300 x 200 = 60000 pixels" in str(info.value)
    assert open_image(png, max_pixels=60_000).size == (300, 200)
    prep = Preprocessing("L", 8, 8)
    with pytest.raises(ProtocolError) as refused:  # a request's budget is for all its images
        image_rows([png, png], prep, max_pixels=100_000)
    assert refused.value.status == 413 and "image 1: with the images before it" in str(
        refused.value
    )
    assert image_rows([png], prep, max_pixels=100_000).shape == (1, 64)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"not an image at all", "is not PNG or JPEG"),
        (encoded(Image.new("L", (8, 8)), "GIF"), "is not PNG or JPEG"),
        (encoded(Image.new("L", (64, 64)))[:60], "truncated or corrupt"),
    ],
    ids=["text", "gif", "truncated"],
)
def test_what_is_not_a_png_or_jpeg_is_an_image_error(data: bytes, needle: str) -> None:
    with pytest.raises(ImageError) as info:
        open_image(data, formats=("PNG", "JPEG"))
    assert needle in str(info.value) and not info.value.too_large


def test_exif_orientation_is_applied() -> None:
    im = Image.new("L", (4, 2))
    im.putpixel((0, 0), 255)  # top-left of a landscape image
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = io.BytesIO()
    im.save(out, format="JPEG", exif=exif, quality=100)
    upright = open_image(out.getvalue())
    assert upright.size == (2, 4)  # shown as portrait
    row = image_row(upright, Preprocessing("L", 4, 2))
    assert row.reshape(4, 2)[0, 1] > 0.5  # the bright pixel is now at the top right
