"""The default name of a dataset: what ``datawheel run`` and ``datasets ingest`` call a
source when no name is given.

The name is the source's file or folder name, without its data and compression suffixes,
transliterated to ASCII. A source with nothing usable left is refused with a fix, never
given a placeholder (``dataset``) that unrelated sources would share.
"""

from __future__ import annotations

import re
import unicodedata

from datawheel.errors import DatawheelError

__all__ = ["default_name"]

# data and compression suffixes a default name leaves out ("x.csv.gz" -> "x")
_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq", ".gz", ".bz2", ".xz", ".zst", ".zip")
# letters NFKD does not split into an ASCII letter and a mark
_LETTERS = str.maketrans(
    {
        "ø": "o",
        "æ": "ae",
        "œ": "oe",
        "ß": "ss",
        "đ": "d",
        "ð": "d",
        "ł": "l",
        "þ": "th",
        "\u0131": "i",
    }
)


def default_name(source: str) -> str:
    """A dataset name derived from a source: ``digits``, a file stem, a folder name.

    The stem is transliterated to ASCII (``ÜNÏ çødé.csv`` -> ``uni-code``); a stem with
    nothing usable left (``..csv``, ``---.csv``, ``数据.csv``) is refused rather than
    turned into a shared placeholder that two unrelated sources would both get.
    """
    if source in ("digits", "builtin:digits"):
        return "digits"
    if "://" in source:  # a URL: its path's last segment, without query or fragment
        source = re.split(r"[?#]", source, maxsplit=1)[0]
    stem = base = source.rstrip("/").rsplit("/", 1)[-1]
    while stem.lower().endswith(_SUFFIXES):
        stem = stem[: stem.rindex(".")]
    ascii_stem = unicodedata.normalize("NFKD", stem.lower().translate(_LETTERS))
    ascii_stem = ascii_stem.encode("ascii", "ignore").decode()
    name = re.sub(r"[^a-z0-9_.-]+", "-", ascii_stem).strip("-._")[:63].rstrip("-._")
    if not name:
        raise DatawheelError(
            f"cannot make a dataset name out of {base!r}: it has no letters or digits that "
            "can be written in ASCII",
            "name the dataset: --param dataset_name=NAME for 'datawheel run', --name NAME "
            "for 'datawheel datasets ingest'",
        )
    return name
