"""Structured logs: one JSON object per line, carrying the trace and request ids, with the
personal data and secrets a message may hold masked on the way out.

Masking happens in the formatter, so it covers every logger that reaches the root handler:
notifyd's own, and the third-party ones (httpx, aiosmtpd, hypercorn) alike. It works on the
rendered message and exception text, never on the record's arguments, so code can log what is
useful (an address a provider refused) and still not leak it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final, TextIO

from opentelemetry import trace

MASK: Final = "***"

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("notifyd_request_id", default="")


def bind_request_id(request_id: str) -> None:
    """The id of the request being served, for every line logged while serving it (the
    variable lives in the serving task's context, so it ends with the task)."""
    _request_id.set(request_id)


def current_request_id() -> str:
    return _request_id.get()


# -- masking ----------------------------------------------------------------------------------

_Rule = tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]


def _last_digits(match: re.Match[str]) -> str:
    # The last two digits are kept: enough to tell two numbers apart in one investigation.
    digits = re.sub(r"\D", "", match.group(0))
    return f"{'+' if match.group(0).startswith('+') else ''}{MASK}{digits[-2:]}"


def _national_number(match: re.Match[str]) -> str:
    # Too few digits for a phone number: a version, a count, a short code.
    if len(re.sub(r"\D", "", match.group(0))) < 9:
        return match.group(0)
    return _last_digits(match)


def _grouped_number(match: re.Match[str]) -> str:
    text = match.group(0)
    if len(re.sub(r"\D", "", text)) < 7:
        return text
    if re.fullmatch(r"\d+\.\d+", text):  # a decimal
        return text
    return _last_digits(match)


_UUID: Final = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


def _dotless_email(match: re.Match[str]) -> str:
    if _UUID.fullmatch(match.group(1)):
        return match.group(0)
    return f"{MASK}@{match.group(2)}"


# Names whose value is a secret in key=value, "key": "value" and 'key': 'value' forms: the last
# word of the name decides (api_key, page_token, x-signature, password), so "monkey" is safe.
_SECRET_NAME = (
    r"(?:[\w-]*?[_-])?(?:token|secret|signature|sig|password|passwd|pwd|key|apikey|auth"
    r"|authorization|credentials?)"
)

# Order matters: whole tokens (JWTs, keys with a prefix) go before the generic long-string
# rules, and URL credentials before emails (user:password@host looks like an address).
_RULES: Final[tuple[_Rule, ...]] = (
    # Credentials in a URL: scheme://user:password@host, the user maybe empty (redis://:pw@h)
    # and the password maybe holding an '@' itself (up to the last '@' before the path).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]*(?::[^/\s]*)?@"), rf"\1{MASK}@"),
    # JSON Web Tokens (FCM and APNs bearer tokens, service-account assertions).
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), f"eyJ{MASK}"),
    # Authorization header values.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=:-]{4,}"), rf"\1 {MASK}"),
    # notifyd's API keys (`notifyd keys create`: nfy_<base64url>, dev mode: nfy_dev_...).
    (re.compile(r"\bnfy_[A-Za-z0-9_-]+"), f"nfy_{MASK}"),
    # Standard Webhooks signing secrets.
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=_-]*"), f"whsec_{MASK}"),
    # Google OAuth access tokens (FCM).
    (re.compile(r"\bya29\.[A-Za-z0-9._-]+"), f"ya29.{MASK}"),
    # Secret-looking parameters: ?token=..., api_secret=..., signature=... (query strings, forms).
    # (A value may hold commas, as in signature=v1,<base64>, but does not end with one.)
    (
        re.compile(rf"(?i)\b({_SECRET_NAME})=[^&\s'\";)\]}}]*[^&\s'\",;)\]}}]"),
        rf"\1={MASK}",
    ),
    # ... and in JSON or a Python repr: "device_token": "...", 'api_key': '...'.
    (
        re.compile(rf"(?i)([\"'])({_SECRET_NAME})\1(\s*:\s*)([\"'])(?:\\.|(?!\4).)*\4"),
        rf"\1\2\1\3\4{MASK}\4",
    ),
    # ... and as a header: "x-api-key: ...", "webhook-signature: v1,... v1,...", "secret: x"
    # (to the end of the line or a quote; a Bearer/Basic value is already masked above).
    (
        re.compile(
            rf"(?i)\b({_SECRET_NAME})(:[ \t]*)(?![\"'\s]|(?:bearer|basic)\s+\*\*\*)"
            r"[^\r\n\"']*[^\s\"']"
        ),
        rf"\1\2{MASK}",
    ),
    # Email addresses: the domain stays (which provider refused it is often the question).
    (
        re.compile(
            r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@((?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
            r"[A-Za-z]{2,})\b"
        ),
        rf"{MASK}@\1",
    ),
    # ... and with a host that has no dot (alice@localhost), except notifyd's own message ids
    # (<uuid@notifyd>), which name no one.
    (
        re.compile(
            r"(?<![\w.%+-])([A-Za-z0-9._%+-]+)@([A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)"
            r"(?![\w.@-])"
        ),
        _dotless_email,
    ),
    # Phone numbers: E.164 (+ and 7 to 15 digits, maybe grouped), or a bare run of 10 to 15
    # digits that is not part of an id, a decimal or a port.
    (re.compile(r"(?<![\w+])\+[1-9](?:[ .-]?\d){6,14}(?!\d)"), _last_digits),
    (re.compile(r"(?<![\w.+:/-])\d{10,15}(?![\w.])"), _last_digits),
    # ... or a national number: a trunk 0 or an area code in brackets, then digit groups.
    (
        re.compile(r"(?<![\w.+:/-])(?:\(\d{2,5}\)|0\d{1,5})(?:[ -]?\d{2,}){1,4}(?![\w.])"),
        _national_number,
    ),
    # ... or any other grouping of 7 or more digits: 415-555-2671, 415.555.2671,
    # +49 (0)30 1234567; not a date, an IPv4 address or a decimal.
    (
        re.compile(
            r"(?<![\w.+:/()-])(?!\d{4}([-./])\d{1,2}\1\d{1,2}(?!\d)|\d{1,2}([-./])\d{1,2}\2\d{4}(?!\d)"
            r"|\d{1,3}(?:\.\d{1,3}){3}(?!\d))"
            r"\+?(?:\(\d{1,5}\)|\d+)(?:(?:[ .-]|(?<=\))|(?=\())(?:\(\d{1,5}\)|\d+))+"
            r"(?![\w-]|\.\d)"
        ),
        _grouped_number,
    ),
    # Device tokens: APNs tokens are 64 hex digits; FCM registration tokens are long
    # base64url strings with a colon; anything else this long and random is a secret too.
    (re.compile(r"\b[0-9a-fA-F]{32,}\b"), MASK),
    (re.compile(r"\b[A-Za-z0-9_-]{20,}:[A-Za-z0-9_-]{20,}"), MASK),
    (re.compile(r"(?<![\w/.-])(?=[A-Za-z_-]*\d)[A-Za-z0-9_-]{64,}(?![\w/.-])"), MASK),
)


def mask(text: str) -> str:
    """``text`` with emails, phone numbers, tokens, keys and secrets replaced by ``***``."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


# -- formatting -------------------------------------------------------------------------------


def _trace_ids() -> tuple[str, str] | None:
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and when known trace_id,
    span_id, request_id and exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask(record.getMessage()),
        }
        ids = _trace_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        request_id = _request_id.get()
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = mask(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = mask(record.exc_text)
        if record.stack_info:
            entry["stack"] = mask(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False)


class MaskingTextFormatter(logging.Formatter):
    """The human-readable line, masked like the JSON one, with the ids appended when known."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = mask(super().format(record))
        extras = []
        ids = _trace_ids()
        if ids is not None:
            extras.append(f"trace_id={ids[0]}")
        request_id = _request_id.get()
        if request_id:
            extras.append(f"request_id={request_id}")
        if not extras:
            return line
        first, newline, rest = line.partition("\n")
        return f"{first} [{' '.join(extras)}]{newline}{rest}"


LOG_FORMATS: Final = ("json", "text")
# Libraries that log at INFO for every connection or request (httpx: each request with its
# URL; aiosmtpd: each SMTP session of the sandbox peer): heard from at WARNING and above,
# unless notifyd itself is asked for DEBUG.
CHATTY_LOGGERS: Final = ("httpx", "httpcore", "mail.log", "hypercorn.error", "hypercorn.access")


def configure_logging(
    level: str, log_format: str = "json", stream: TextIO | None = None
) -> logging.Handler:
    """One handler on the root logger, for every logger in the process; returns it."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else MaskingTextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    quiet = root.level if root.level <= logging.DEBUG else max(root.level, logging.WARNING)
    for name in CHATTY_LOGGERS:
        third_party = logging.getLogger(name)
        # A handler of their own (a library default) would write a second, unmasked line.
        for old in list(third_party.handlers):
            third_party.removeHandler(old)
        third_party.propagate = True
        third_party.setLevel(quiet)
    # Python warnings (deprecations and the like) go through the same handler.
    logging.captureWarnings(True)
    return handler
