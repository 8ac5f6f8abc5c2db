"""JSON log lines with trace and request ids, and the masking of personal data and secrets."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from infrastructure.telemetry.logs import (
    JsonFormatter,
    MaskingTextFormatter,
    bind_request_id,
    configure_logging,
    mask,
)

API_KEY = "nfy_" + "Qm9vbXNoYWthbGFrYV9yZWFsbHlfbG9uZ19rZXk1234"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw+/4f3Jz0k1c="
APNS_TOKEN = "740f4707bebcf74f9b7c25d48e3358945f6aa01da5ddb387462c7eaf61bb78ad"
FCM_TOKEN = (
    "dXQ3Z2VjZmRhYmNkZWZnaGlq:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx1mPcW4h6y0Kw3Lp"
    "7Qz9Vb2Nm5Tc8Xe1Ra4Sd6Uf0Wg3Yh7Ij9Kl2Mn4Op6"
)
JWT = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLWJ5dGVz"


@pytest.mark.parametrize(
    ("kind", "text", "secret", "masked"),
    [
        ("email", "sent to ada@example.com", "ada@example.com", "sent to ***@example.com"),
        (
            "email with subdomain and tag",
            "to grace.hopper+navy@mail.example.co.uk.",
            "grace.hopper+navy",
            "to ***@mail.example.co.uk.",
        ),
        ("E.164 phone", "sms to +14155550123 failed", "4155550123", "sms to +***23 failed"),
        ("grouped phone", "call +41 79 123 45 67", "79 123 45", "call +***67"),
        ("bare digits", "number 14155550123 replied STOP", "14155550123", "number ***23 replied"),
        ("national number", "'0151 1234567' is not E.164", "1234567", "'***67' is not"),
        ("bracketed area code", "call (415) 555-0123 now", "555-0123", "call ***23 now"),
        ("bearer token", "authorization: Bearer abc.def-ghi", "abc.def-ghi", "Bearer ***"),
        ("basic auth", "Authorization: Basic QUM6c2VjcmV0", "QUM6c2VjcmV0", "Basic ***"),
        ("notifyd API key", f"key {API_KEY} refused", API_KEY[4:], "key nfy_*** refused"),
        ("dev API key", "nfy_dev_e2e_0123456789abcdef", "e2e_0123", "nfy_***"),
        ("webhook secret", f"secret {WEBHOOK_SECRET}.", WEBHOOK_SECRET[6:], "secret whsec_***"),
        ("APNs device token", f"token {APNS_TOKEN} gone", APNS_TOKEN, "token *** gone"),
        ("FCM registration token", f"token {FCM_TOKEN} gone", "APA91b", "token *** gone"),
        ("JWT", f"assertion={JWT}", "c2lnbmF0dXJl", "assertion=eyJ***"),
        ("JWT in prose", f"got {JWT} back", "c2lnbmF0dXJl", "got eyJ*** back"),
        ("OAuth token", "ya29.a0AfH6SMBx-abc_123", "a0AfH6SMBx", "ya29.***"),
        (
            "query parameters",
            "POST https://hooks.example.com/in?token=t0k3n&page=2&api_key=k3y&sig=v1,abc",
            "t0k3n",
            "in?token=***&page=2&api_key=***&sig=***",
        ),
        ("form field", "api_secret=s3cr3t&to=x", "s3cr3t", "api_secret=***&to=x"),
        ("JSON field", '{"device_token": "tok-123", "title": "Hi"}', "tok-123", '"***"'),
        ("repr field", "{'password': 'hunter2'}", "hunter2", "{'password': '***'}"),
        ("URL credentials", "smtp://user:pa55@smtp.example.com:587", "pa55", "smtp://***@"),
        ("URL with an empty user", "redis://:s3cr3t@redis:6379/0", "s3cr3t", "redis://***@redis"),
        ("URL password with an @", "redis://user:p@ss@redis/0", "p@ss", "redis://***@redis/0"),
        ("dashed national phone", "phone 415-555-2671 refused", "555-2671", "phone ***71 refused"),
        ("dotted national phone", "phone 415.555.2671.", "555.2671", "phone ***71."),
        ("phone with trunk in brackets", "+49 (0)30 1234567 x", "1234567", "+***67 x"),
        ("email without a dot", "to alice@localhost failed", "alice", "to ***@localhost failed"),
        ("secret header", "secret: hunter2", "hunter2", "secret: ***"),
        ("api key header", "x-api-key: k3y-abc", "k3y-abc", "x-api-key: ***"),
        (
            "signature header",
            "webhook-signature: v1,c2lnMQ== v1,c2lnMg==",
            "c2lnM",
            "webhook-signature: ***",
        ),
        ("authorization header", "authorization: t0k3n", "t0k3n", "authorization: ***"),
    ],
)
def test_each_kind_is_masked(kind: str, text: str, secret: str, masked: str) -> None:
    out = mask(text)
    assert secret not in out, kind
    assert masked in out, kind


@pytest.mark.parametrize(
    "text",
    [
        "notification 0195f3b2-7c1e-7abc-8def-0123456789ab sent in 12.5 ms",
        "notifyd API listening on 127.0.0.1:50051",
        "request e2e-0195f3b2-7c1e-7abc-8def-0123456789ab ended INVALID_ARGUMENT",
        "message <0195f3b2-7c1e-7abc-8def-0123456789ab@notifyd> accepted",
        "recovered 12 expired leases; reconciler re-enqueued 3 notifications",
        "an unregistered token is invalidated; the monkey=banana stays",
        "worker paused: Redis unreachable; retrying in 0.4s",
        "version 0.12 of 2025-03-01 has 02 03 04 items",
        "2025-03-01 12:30:45,123 took 1234567.89 ms on 01.03.2025",
        "redis at 192.168.100.200:6379 is up",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert mask(text) == text


def _record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("notifyd.test", logging.WARNING, __file__, 1, message, args, exc_info)


def test_a_json_line_has_the_fields_and_masks_the_arguments() -> None:
    line = JsonFormatter().format(_record("refused %s: %s", "ada@example.com", "no such user"))
    entry = json.loads(line)
    assert "\n" not in line
    assert set(entry) == {"time", "level", "logger", "message"}
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "notifyd.test"
    assert entry["message"] == "refused ***@example.com: no such user"
    assert entry["time"].endswith("+00:00")


def test_the_exception_text_is_masked_too() -> None:
    try:
        raise ValueError("bad address ada@example.com")
    except ValueError as error:
        caught = error
    entry = json.loads(JsonFormatter().format(_record("delivery failed", exc=caught)))
    assert "ValueError: bad address ***@example.com" in entry["exception"]
    assert "ada@" not in entry["exception"]


def test_trace_and_span_ids_while_a_span_is_current() -> None:
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("test")
    with tracer.start_as_current_span("rpc") as span:
        entry = json.loads(JsonFormatter().format(_record("inside")))
    context = span.get_span_context()
    assert entry["trace_id"] == f"{context.trace_id:032x}"
    assert entry["span_id"] == f"{context.span_id:016x}"


async def test_the_request_id_of_the_call_being_served() -> None:
    # A task of its own, as gRPC serves each call: the id ends with it.
    import asyncio

    async def serving() -> str:
        bind_request_id("req-42")
        return JsonFormatter().format(_record("inside"))

    assert json.loads(await asyncio.create_task(serving()))["request_id"] == "req-42"
    assert "request_id" not in json.loads(JsonFormatter().format(_record("outside")))


def test_the_text_format_masks_as_well() -> None:
    formatter = MaskingTextFormatter()
    line = formatter.format(_record("refused %s", "+14155550123"))
    assert "WARNING notifyd.test: refused +***23" in line


@pytest.fixture
def root_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    saved = {n: (logging.getLogger(n).level, logging.getLogger(n).propagate) for n in ("httpx",)}
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, (lvl, propagate) in saved.items():
        logging.getLogger(name).setLevel(lvl)
        logging.getLogger(name).propagate = propagate
    logging.captureWarnings(False)


def test_every_logger_goes_through_the_one_masking_handler(root_restored: None) -> None:
    stream = io.StringIO()
    # A library that brought its own handler would write a second, unmasked line.
    httpx_logger = logging.getLogger("httpx")
    stray = logging.StreamHandler(io.StringIO())
    httpx_logger.addHandler(stray)
    configure_logging("INFO", "json", stream)

    logging.getLogger("notifyd.x").info("to %s", "ada@example.com")
    httpx_logger.warning("POST https://h.example.com/?token=abc failed")
    httpx_logger.info("HTTP Request: POST https://h.example.com/ 200 OK")  # below WARNING
    logging.getLogger("mail.log").warning("peer sent MAIL FROM:<bob@example.org>")

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["logger"], e["message"]) for e in lines] == [
        ("notifyd.x", "to ***@example.com"),
        ("httpx", "POST https://h.example.com/?token=*** failed"),
        ("mail.log", "peer sent MAIL FROM:<***@example.org>"),
    ]
    assert stray not in httpx_logger.handlers


def test_an_unknown_format_is_refused(root_restored: None) -> None:
    with pytest.raises(ValueError, match="json, text"):
        configure_logging("INFO", "xml")
