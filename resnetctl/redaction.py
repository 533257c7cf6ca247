"""What resnetctl prints about user input: secrets redacted, control characters shown escaped.

Every message and log line that can carry a URI or a string from a user's file goes through here:
`redact_uri` for one store URI, `redact` for free text that may hold URIs (an exception's message),
`printable` for anything printed to a terminal (an escape sequence in a grid's path must not
reach it raw), and `for_rich` for strings rich renders as markup (`[/x]` must not be a tag).
"""

from __future__ import annotations

import re
import urllib.parse

MASK = "***"
SECRET_QUERY_KEYS = ("password", "pwd", "passwd", "token", "secret", "access_token", "api_key")
# scheme://user:password@ inside free text: the password is everything up to the last @ before the host
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)(?P<secret>[^\s/]*)(?P<at>@)")
_QUERY_SECRET = re.compile(r"(?P<head>[?&](?:" + "|".join(SECRET_QUERY_KEYS) + r")=)(?P<secret>[^&#\s]*)", re.I)
# C0 and C1 control characters, DEL, and the invisible format characters that reorder text (Trojan Source)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def redact_uri(uri: str) -> str:
    """The URI with its password (and any password/token query parameter) replaced by ***,
    e.g. postgresql://user:***@db:5432/mlflow."""
    try:
        parsed = urllib.parse.urlparse(uri)
        password = parsed.password
    except ValueError:  # a malformed netloc: show nothing of it rather than guess where the secret ends
        return uri.split("://", 1)[0] + "://" + MASK if "://" in uri else uri
    if password:
        host = parsed.hostname or ""
        host = f"[{host}]" if ":" in host else host
        netloc = f"{parsed.username}:{MASK}@{host}" + (f":{parsed.port}" if parsed.port else "")
        uri = parsed._replace(netloc=netloc).geturl()
    return _QUERY_SECRET.sub(lambda m: m["head"] + MASK, uri)


def redact(text: str) -> str:
    """Free text with the password of every URI in it replaced by *** (messages of libraries we call)."""
    text = _USERINFO.sub(lambda m: m["head"] + MASK + m["at"], text)
    return _QUERY_SECRET.sub(lambda m: m["head"] + MASK, text)


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with control characters and escape sequences shown escaped (ESC as \\x1b); one line
    unless `keep_newlines`."""
    def swap(match: re.Match) -> str:
        char = match.group()
        return char if keep_newlines and char == "\n" else _escaped(char)

    return _CONTROL.sub(swap, text)


def for_rich(value: object, *, keep_newlines: bool = False) -> str:
    """A user string for rich's markup: printable, with `[` escaped so it is never read as a tag."""
    from rich.markup import escape

    return escape(printable(str(value), keep_newlines=keep_newlines))


def shown(text: str, *, keep_newlines: bool = False) -> str:
    """What a message may show: secrets redacted, control characters escaped."""
    return printable(redact(text), keep_newlines=keep_newlines)


__all__ = ["for_rich", "printable", "redact", "redact_uri", "shown"]
