"""Credentials out of anything printed or logged: ``http://user:SECRET@host`` -> ``http://***@host``.

Every URL that reaches a person (an error line, a progress line, an echoed endpoint or host)
goes through :func:`redact` first, so a key written into a URL's userinfo is never shown.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact", "redact_netloc"]

MASK = "***"

# scheme://userinfo@ : the authority ends at the first '/', '?', '#', whitespace or quote,
# and everything in it up to its last '@' is userinfo (a password may hold an '@' itself).
_URL_USERINFO = re.compile(r"(?i)(?:\b([a-z][a-z0-9+.-]*:))?//[^/?#\s'\"]*@")


def redact(text: str) -> str:
    """``text`` with the userinfo of every ``scheme://user:password@host`` URL in it masked."""
    return _URL_USERINFO.sub(lambda m: f"{m.group(1) or ''}//{MASK}@", text)


def redact_netloc(netloc: str) -> str:
    """A URL or ``user:password@host:port`` with its userinfo masked."""
    if "//" in netloc or "@" not in netloc:
        return redact(netloc)
    return f"{MASK}@{netloc.rpartition('@')[2]}"  # host:port written with userinfo, no scheme
