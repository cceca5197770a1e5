"""The studio's token rule and server address, as `datawheel studio` reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from datawheel.errors import DatawheelError
from datawheel.studio.config import check_serve_url, studio_token


def test_the_token_comes_from_a_file_then_the_studio_then_the_serving_variable(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "DATAWHEEL_STUDIO_TOKEN"
    secret.write_text("from-the-mounted-secret\n")
    env = {
        "DATAWHEEL_STUDIO_TOKEN_FILE": str(secret),
        "DATAWHEEL_STUDIO_TOKEN": "from-the-environment",
        "DATAWHEEL_SERVE_TOKEN": "the-serving-token",
    }
    assert studio_token(env) == ("from-the-mounted-secret", False)
    del env["DATAWHEEL_STUDIO_TOKEN_FILE"]
    assert studio_token(env) == ("from-the-environment", False)
    del env["DATAWHEEL_STUDIO_TOKEN"]
    assert studio_token(env) == ("the-serving-token", False)
    made, generated = studio_token({})
    assert generated and len(made) >= 16 and made != studio_token({})[0]


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"DATAWHEEL_STUDIO_TOKEN_FILE": "/nonexistent/token"}, "cannot be read"),
        ({"DATAWHEEL_STUDIO_TOKEN": "short"}, "shorter than 8"),
    ],
)
def test_a_bad_token_setting_is_a_one_line_error(env: dict[str, str], says: str) -> None:
    with pytest.raises(DatawheelError, match=says) as caught:
        studio_token(env)
    assert "Fix:" in str(caught.value)


def test_an_empty_token_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("\n")
    with pytest.raises(DatawheelError, match="empty"):
        studio_token({"DATAWHEEL_STUDIO_TOKEN_FILE": str(tmp_path / "t")})


def test_the_server_address_is_a_base_url() -> None:
    assert check_serve_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert check_serve_url("") is None and check_serve_url(None) is None
    for bad in ("127.0.0.1:8080", "ftp://x", "http://host/v2/models"):
        with pytest.raises(DatawheelError, match="not a server address"):
            check_serve_url(bad)
