"""Loading raw sources: built-in digits, CSV/Parquet files and image folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from datawheel.data.sources import load_source
from datawheel.data.versions import ingest
from datawheel.errors import DatawheelError
from datawheel.storage import LocalStore


def _table(n: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.integers(0, 100, size=n),
            "target": [i % 3 for i in range(n)],
        }
    )


# ------------------------------------------------------------------------------ digits


def test_digits() -> None:
    loaded = load_source("digits")
    frame = loaded.frame
    assert len(frame) == 1797
    assert loaded.label == "label"
    assert loaded.image_shape == (1, 8, 8)
    features = [c for c in frame.columns if c != "label"]
    assert len(features) == 64
    x = frame[features].to_numpy()
    assert x.dtype == np.float32
    assert x.min() == 0.0
    assert x.max() == 1.0
    assert sorted(frame["label"].unique()) == [str(i) for i in range(10)]
    assert all(isinstance(v, str) for v in frame["label"])
    assert load_source("builtin:digits").frame.equals(frame)


# ------------------------------------------------------------------------------ tables


def _check_table(loaded_frame: pd.DataFrame, original: pd.DataFrame) -> None:
    assert list(loaded_frame.columns) == ["a", "b", "target"]
    assert loaded_frame["a"].dtype == np.float32
    assert loaded_frame["b"].dtype == np.float32
    assert list(loaded_frame["target"]) == [str(v) for v in original["target"]]
    np.testing.assert_allclose(loaded_frame["a"], original["a"].astype(np.float32))
    np.testing.assert_array_equal(loaded_frame["b"], original["b"].astype(np.float32))


def test_csv(tmp_path: Path) -> None:
    original = _table()
    path = tmp_path / "data.csv"
    original.to_csv(path, index=False)
    loaded = load_source(str(path), label="target")
    assert loaded.label == "target"
    assert loaded.image_shape is None
    _check_table(loaded.frame, original)


def test_parquet(tmp_path: Path) -> None:
    original = _table()
    path = tmp_path / "data.parquet"
    original.to_parquet(path, index=False)
    loaded = load_source(str(path), label="target")
    _check_table(loaded.frame, original)


def test_file_uri_prefix(tmp_path: Path) -> None:
    original = _table()
    path = tmp_path / "data.csv"
    original.to_csv(path, index=False)
    loaded = load_source(f"file://{path}", label="target")
    _check_table(loaded.frame, original)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatawheelError, match="does not exist"):
        load_source(str(tmp_path / "nope.csv"))


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("a,label\n1,x\n")
    with pytest.raises(DatawheelError, match=r"unsupported type '\.txt'"):
        load_source(str(path))


def test_csv_without_label_column(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    _table().to_csv(path, index=False)
    with pytest.raises(DatawheelError) as info:
        load_source(str(path))  # default label "label"; the column is "target"
    message = str(info.value)
    assert "no label column 'label'" in message
    assert "target" in message  # the available columns are listed
    assert "--param label=" in message


def test_header_only_csv_has_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("a,b,label\n")
    with pytest.raises(DatawheelError, match="no rows"):
        ingest(LocalStore(tmp_path / "store"), str(path))


def test_zero_byte_csv_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "zero.csv"
    path.write_bytes(b"")
    with pytest.raises(DatawheelError, match="is empty"):
        load_source(str(path))


def test_text_feature_is_categorical(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    frame = _table()
    frame["colour"] = ["red", "green", "blue"] * 4
    frame.to_csv(path, index=False)
    loaded = load_source(str(path), label="target")
    assert loaded.categorical == ("colour",)
    assert loaded.frame["colour"].tolist() == ["red", "green", "blue"] * 4
    assert loaded.frame["a"].dtype == np.float32


def test_garbage_parquet(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"this is not parquet at all \x00\x01\x02" * 10)
    with pytest.raises(DatawheelError, match=r"cannot parse .* as Parquet"):
        load_source(str(path))


# ------------------------------------------------------------------------------ images


def _image_folder(root: Path, mode: str, counts: dict[str, int], size: int = 10) -> Path:
    rng = np.random.default_rng(1)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            shape = (size, size) if mode == "L" else (size, size, 3)
            arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.png")
    return root


def test_grayscale_image_folder(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "imgs", "L", {"cat": 3, "dog": 2, "eel": 4})
    loaded = load_source(str(root), image_size=6)
    assert loaded.image_shape == (1, 6, 6)
    frame = loaded.frame
    assert len(frame) == 9
    assert sorted(frame["label"].value_counts().items()) == [("cat", 3), ("dog", 2), ("eel", 4)]
    x = frame.drop(columns="label").to_numpy()
    assert x.shape == (9, 36)
    assert x.dtype == np.float32
    assert x.min() >= 0.0
    assert x.max() <= 1.0
    assert x.max() > 0.5  # random pixels: scaled, not all zero


def test_rgb_image_folder(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "imgs", "RGB", {"a": 2, "b": 3})
    loaded = load_source(str(root), image_size=5)
    assert loaded.image_shape == (3, 5, 5)
    assert len(loaded.frame) == 5
    assert sorted(set(loaded.frame["label"])) == ["a", "b"]
    x = loaded.frame.drop(columns="label").to_numpy()
    assert x.shape == (5, 75)
    assert 0.0 <= x.min() <= x.max() <= 1.0


def test_image_pixel_values_match(tmp_path: Path) -> None:
    (tmp_path / "imgs" / "k").mkdir(parents=True)
    arr = np.full((4, 4), 51, np.uint8)  # 51 / 255 = 0.2
    Image.fromarray(arr).save(tmp_path / "imgs" / "k" / "x.png")
    Image.fromarray(arr).save(tmp_path / "imgs" / "k" / "y.png")
    loaded = load_source(str(tmp_path / "imgs"), image_size=4)
    np.testing.assert_allclose(loaded.frame.drop(columns="label").to_numpy(), 0.2, atol=1e-6)


def test_empty_image_folder(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    with pytest.raises(DatawheelError, match="no class subfolders"):
        load_source(str(tmp_path / "imgs"))


def test_image_folder_without_class_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "loose.png")
    with pytest.raises(DatawheelError, match="no class subfolders"):
        load_source(str(root))


def test_class_subfolders_without_images(tmp_path: Path) -> None:
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    (tmp_path / "imgs" / "a" / "notes.txt").write_text("hi")
    with pytest.raises(DatawheelError, match="has no images"):
        load_source(str(tmp_path / "imgs"))


def test_unreadable_image(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "imgs", "L", {"a": 2, "b": 2})
    bad = root / "b" / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DatawheelError, match="cannot read image") as info:
        load_source(str(root))
    assert "broken.png" in str(info.value)


def _digits_csv_bytes(rows: int = 40) -> bytes:
    frame = load_source("digits").frame.head(rows)
    return frame.to_csv(index=False).encode()


def test_s3_uri_source(s3_env: Any) -> None:
    from datawheel.storage.s3 import S3Store

    S3Store.from_uri(f"s3://{s3_env.bucket}").put_bytes("raw/digits.csv", _digits_csv_bytes())
    loaded = load_source(f"s3://{s3_env.bucket}/raw/digits.csv")
    assert len(loaded.frame) == 40 and loaded.frame.shape[1] == 65
    with pytest.raises(DatawheelError, match="no object"):
        load_source(f"s3://{s3_env.bucket}/raw/missing.csv")


def test_http_uri_source(tmp_path: Path) -> None:
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    (tmp_path / "digits.csv").write_bytes(_digits_csv_bytes(25))

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        assert len(load_source(f"{base}/digits.csv").frame) == 25
        with pytest.raises(DatawheelError, match="HTTP 404"):
            load_source(f"{base}/nope.csv")
    finally:
        server.shutdown()
        server.server_close()


def test_an_http_source_never_echoes_what_it_sent(tmp_path: Path) -> None:
    """A URL answering with a credentials file that parses as CSV: the error names neither its
    columns nor the URL's password."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"AWS_SECRET_ACCESS_KEY=SECRETVALUE,token\n1,2\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://me:PASSWORD@127.0.0.1:{httpd.server_port}/creds.csv"
        with pytest.raises(DatawheelError) as info:
            load_source(url)
    finally:
        httpd.shutdown()
    text = f"{info.value} {info.value.fix}"
    assert "no label column 'label' (2 columns)" in text
    for secret in ("SECRET", "PASSWORD", "token"):
        assert secret not in text
