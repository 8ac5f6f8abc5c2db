"""The log audit: every line every notifyd process (and CLI call) wrote during the whole e2e
session is a JSON object with the fields, and none of the email addresses, phone numbers, API
keys, webhook secrets or device tokens the suite used appears unmasked.

Runs last (tests/e2e/conftest.py moves it to the end of the session), so it reads what all the
other tests made notifyd log. It makes sure there is something to mask first: a delivery a
provider refuses (the address goes into the log line) and calls that fail on bad addresses
(the error, which names the field and not the address, is logged with the caller's request
id)."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from interfaces.grpc.gen.notify.v1 import notification_pb2 as pb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as svc_grpc
from tests.e2e.harness import ISSUED_SECRETS, SESSION_LOGS, Notifyd
from tests.e2e.helpers import eventually

pytestmark = pytest.mark.e2e

E2E_SOURCES = sorted(Path(__file__).parent.glob("*.py"))
# A number the sandbox's Twilio refuses as invalid (a PERMANENT failure, no suppression).
REFUSED_PHONE = "+15005550001"
AUDIT_EMAIL = "grace.logaudit@example.com"
# Addresses the masker once let through: a national phone number and an email without a dot.
NATIONAL_PHONE = "415-555-2671"
LOCAL_EMAIL = "x@localhost"
FIELDS = {"time", "level", "logger", "message"}
OPTIONAL = {"trace_id", "span_id", "request_id", "exception", "stack"}
LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}

# What each kind looks like unmasked; masking leaves "***" where these would match.
KINDS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}"),
    "phone": re.compile(r"(?<![\w+])\+[1-9]\d{6,14}(?!\d)|(?<![\w.+:/-])\d{10,15}(?![\w.])"),
    "api key": re.compile(r"\bnfy_[A-Za-z0-9_-]+"),
    "webhook secret": re.compile(r"\bwhsec_[A-Za-z0-9+/=_-]+"),
    "device token": re.compile(r"\b[0-9a-fA-F]{32,}\b|\b[A-Za-z0-9_-]{20,}:[A-Za-z0-9_-]{20,}"),
    "jwt": re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\."),
}
# Literals in the suite's sources: addresses, numbers, tokens and keys it sends or stores.
LITERALS = (
    KINDS["email"],
    re.compile(r"\+[1-9]\d{6,14}"),
    re.compile(r"\bnfy_\w+"),
    re.compile(r"""(?:device_)?token=["']([^"']{6,})["']"""),
    re.compile(r"""["']token["']:\s*["']([^"']{6,})["']"""),
)


def _used_in_the_suite() -> set[str]:
    found: set[str] = set()
    for source in E2E_SOURCES:
        text = source.read_text()
        for pattern in LITERALS:
            for match in pattern.finditer(text):
                found.add(match.group(match.lastindex or 0).strip())
    return {literal for literal in found if len(literal) >= 6}


def _entries(path: Path) -> list[tuple[int, str]]:
    return list(enumerate(path.read_text(errors="replace").splitlines(), start=1))


def _audited_text(entry: dict[str, Any]) -> str:
    """What a line says, without the ids (hex by design)."""
    return json.dumps({k: v for k, v in entry.items() if k not in OPTIONAL - {"exception"}})


@pytest.fixture(scope="module")
def provoked(stub: svc_grpc.NotificationServiceStub, notifyd: Notifyd) -> str:
    """Log lines that must be masked: a refused SMS (its number in the failure line) and a
    call refused for a bad address (echoed in the error). Returns the request id used."""
    globex = notifyd.callers["globex"]
    sent = stub.SendNotification(
        svc.SendNotificationRequest(
            request_id=str(uuid.uuid4()),
            user_id=f"audit-{uuid.uuid4().hex[:8]}",
            channel=pb.CHANNEL_SMS,
            category="log_audit",
            content=pb.Content(body="Your code is 123456"),
            address=pb.Address(phone=REFUSED_PHONE),
        ),
        metadata=globex.metadata,
    ).notification
    eventually(
        lambda: (
            stub.GetNotification(
                svc.GetNotificationRequest(id=sent.id), metadata=globex.metadata
            ).notification.status
        ),
        lambda status: status == pb.NOTIFICATION_STATUS_FAILED,
    )
    request_id = f"log-audit-{uuid.uuid4()}"
    with pytest.raises(grpc.RpcError) as refused:
        stub.SendNotification(
            svc.SendNotificationRequest(
                request_id=str(uuid.uuid4()),
                user_id="audit",
                channel=pb.CHANNEL_SMS,
                category="log_audit",
                content=pb.Content(body="hi"),
                address=pb.Address(phone=AUDIT_EMAIL),
            ),
            metadata=(*globex.metadata, ("x-request-id", request_id)),
        )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    # The id comes back to the caller with the error.
    answered = tuple(refused.value.trailing_metadata())  # type: ignore[attr-defined]
    assert ("x-request-id", request_id) in answered
    for channel, address in (
        (pb.CHANNEL_SMS, pb.Address(phone=NATIONAL_PHONE)),
        (pb.CHANNEL_EMAIL, pb.Address(email=LOCAL_EMAIL)),
    ):
        with pytest.raises(grpc.RpcError) as bad_address:
            stub.SendNotification(
                svc.SendNotificationRequest(
                    request_id=str(uuid.uuid4()),
                    user_id="audit",
                    channel=channel,
                    category="log_audit",
                    content=pb.Content(title="hi", body="hi"),
                    address=address,
                ),
                metadata=(*globex.metadata, ("x-request-id", f"{request_id}-{channel}")),
            )
        assert bad_address.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    return request_id


@pytest.fixture(scope="module")
def logs(notifyd: Notifyd, provoked: str) -> dict[Path, list[tuple[int, str]]]:
    def read() -> dict[Path, list[tuple[int, str]]]:
        return {path: _entries(path) for path in SESSION_LOGS if path.exists()}

    def complete(found: dict[Path, list[tuple[int, str]]]) -> bool:
        # The last of the provoked calls (the email one) is in.
        last = f"{provoked}-{pb.CHANNEL_EMAIL}"
        return any(last in line for _, line in found.get(notifyd.log_path, []))

    # Written by another process: wait until the provoked lines are in.
    return eventually(read, complete)


def test_every_line_is_a_json_object_with_the_fields(
    logs: dict[Path, list[tuple[int, str]]],
) -> None:
    assert logs, "no notifyd logs were collected"
    bad = []
    for path, lines in logs.items():
        for number, line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                bad.append(f"{path}:{number}: not JSON: {line[:200]}")
                continue
            if not isinstance(entry, dict):
                bad.append(f"{path}:{number}: not an object: {line[:200]}")
                continue
            missing = FIELDS - set(entry)
            unknown = set(entry) - FIELDS - OPTIONAL
            if missing or unknown or entry["level"] not in LEVELS:
                bad.append(f"{path}:{number}: fields {sorted(entry)}: {line[:200]}")
            if "trace_id" in entry and not re.fullmatch(r"[0-9a-f]{32}", entry["trace_id"]):
                bad.append(f"{path}:{number}: trace_id {entry['trace_id']!r}")
            if "span_id" in entry and not re.fullmatch(r"[0-9a-f]{16}", entry["span_id"]):
                bad.append(f"{path}:{number}: span_id {entry['span_id']!r}")
    assert not bad, "\n".join(bad[:50])


def test_no_personal_data_or_secret_appears_unmasked(
    logs: dict[Path, list[tuple[int, str]]],
) -> None:
    secrets = ISSUED_SECRETS | _used_in_the_suite()
    secrets |= {REFUSED_PHONE, AUDIT_EMAIL, NATIONAL_PHONE, LOCAL_EMAIL}
    # The harness's keys and secrets are in that set: prove it, or the check proves nothing.
    assert any(s.startswith("nfy_") for s in secrets)
    assert any(s.startswith("whsec_") for s in secrets)
    leaks = []
    for path, lines in logs.items():
        for number, line in lines:
            try:
                text = _audited_text(json.loads(line))
            except ValueError:
                text = line
            for kind, pattern in KINDS.items():
                leaks += [f"{path}:{number}: {kind} {m.group(0)!r}" for m in pattern.finditer(text)]
            leaks += [f"{path}:{number}: {s!r} used by the suite" for s in secrets if s in line]
    assert not leaks, "\n".join(leaks[:50])


def test_the_logs_do_mask_something(
    logs: dict[Path, list[tuple[int, str]]], notifyd: Notifyd, provoked: str
) -> None:
    entries = [json.loads(line) for _, line in logs[notifyd.log_path]]
    masked = [e["message"] for e in entries if "***" in e["message"]]
    # The refused number (its last two digits kept), in a line that says what happened.
    assert any("+***01" in m and "twilio" in m for m in masked), masked
    # The refused calls are logged with the field at fault, not the address itself.
    for request_id, field in (
        (provoked, "address.phone"),
        (f"{provoked}-{pb.CHANNEL_SMS}", "address.phone"),
        (f"{provoked}-{pb.CHANNEL_EMAIL}", "address.email"),
    ):
        refused = [e for e in entries if e.get("request_id") == request_id]
        assert len(refused) == 1, refused
        assert "INVALID_ARGUMENT" in refused[0]["message"]
        assert field in refused[0]["message"]
        assert "@" not in refused[0]["message"]
