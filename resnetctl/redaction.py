"""Secrets never reach the terminal, a log or a job's metadata: URIs are printed through `redact_uri`."""

from __future__ import annotations

import urllib.parse


def redact_uri(uri: str) -> str:
    """The URI with its password replaced by ***, e.g. postgresql://user:***@db:5432/mlflow."""
    try:
        parsed = urllib.parse.urlparse(uri)
        password = parsed.password
    except ValueError:  # a malformed netloc: show nothing of it rather than guess where the secret ends
        return uri.split("://", 1)[0] + "://***" if "://" in uri else uri
    if password:
        host = parsed.hostname or ""
        netloc = f"{parsed.username}:***@{host}" + (f":{parsed.port}" if parsed.port else "")
        return parsed._replace(netloc=netloc).geturl()
    return uri
