"""Every secret value this process knows, and the one scrubber all outgoing text passes through.

A secret is registered when it is resolved (an environment reference in the settings, the
database URL's password, a receiver URL that carries a token) and from then on ``scrub``
replaces it, wherever it appears, with ``<redacted>``: in error messages, log lines (a log
record factory scrubs every record, ours and libraries'), stored delivery errors, audit
entries and ``config show``. Values that only look like credentials (``apikey=...``,
``Authorization: Bearer ...``, ``user:password@`` in a URL) are masked too, registered or not.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any
from urllib.parse import parse_qsl, urlsplit

REDACTED = "<redacted>"
# Shorter values would scrub ordinary words and numbers; no credential is this short.
MIN_LENGTH = 6

_lock = threading.Lock()
_secrets: set[str] = set()

_CREDENTIAL_PAIR = re.compile(
    r"(?i)\b((?:api[_-]?key|apikey|access[_-]?token|auth[_-]?token|token|secret|password|passwd|pwd|"
    r"routing[_-]?key|signature|sig)\s*[=:]\s*[\"']?)([^\s\"'&,;}]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic|token)\s+([A-Za-z0-9._~+/=-]{8,})")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@]*:)([^\s/@]+)(@)")


def parts_of(value: str) -> set[str]:
    """The substrings of a secret that must never be shown: the value itself and, for a URL,
    its password, its path and query (webhook tokens live there) and each long path segment."""
    value = value.strip()
    parts = {value}
    if "://" in value:
        try:
            url = urlsplit(value)
            password = url.password
        except ValueError:
            return parts
        if password:
            parts.add(password)
        path_query = url.path + (f"?{url.query}" if url.query else "")
        parts.update(p for p in (path_query, url.path, url.query) if len(p.strip("/")) >= MIN_LENGTH)
        parts.update(segment for segment in url.path.split("/") if len(segment) >= 12)
        parts.update(v for _, v in parse_qsl(url.query) if len(v) >= MIN_LENGTH)
    return {p for p in parts if len(p) >= MIN_LENGTH}


def register(value: str | None) -> None:
    """Remember a secret value (safe to call again with the same value)."""
    if not value:
        return
    found = parts_of(str(value))
    if found:
        with _lock:
            _secrets.update(found)


def scrub_known(text: Any) -> str:
    """``text`` with every registered secret masked (and nothing else changed: for output that
    is data, such as model outputs, where credential-looking words may be legitimate)."""
    result = str(text)
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in result:
            result = result.replace(secret, REDACTED)
    return result


def scrub(text: Any) -> str:
    """``text`` with every registered secret and every credential-looking value masked."""
    result = scrub_known(text)
    result = _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + m.group(3), result)
    result = _CREDENTIAL_PAIR.sub(lambda m: m.group(1) + REDACTED, result)
    result = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", result)
    return result


def scrub_data(value: Any) -> Any:
    """A JSON-like structure with every string in it scrubbed (for audit details and payloads)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: scrub_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_data(v) for v in value]
    return value


_installed = False


# Loggers whose formatter reads the record's arguments, not its message: uvicorn's access log
# (client, method, path, HTTP version, status), as lorawatch server writes it.
_FORMATTED_FROM_ARGS = frozenset({"uvicorn.access"})


def install_log_scrubber() -> None:
    """Scrub every log record when it is made, whoever logs it (idempotent).

    The message is rendered and scrubbed at once, and a traceback attached to the record is
    formatted and scrubbed too, so no handler or formatter ever sees a secret."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()
    formatter = logging.Formatter()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if record.name in _FORMATTED_FROM_ARGS and isinstance(record.args, tuple):
            # their formatter unpacks the arguments: keep them, each scrubbed
            record.args = tuple(scrub(a) if isinstance(a, str) else a for a in record.args)
            return record
        try:
            record.msg, record.args = scrub(record.getMessage()), None
        except Exception:  # a record whose arguments do not format: leave it to the handler
            return record
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = scrub(formatter.formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)
