"""A bulk job: one message sent to many recipients under one request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

MAX_BULK_RECIPIENTS = 1000


@dataclass
class BulkJob:
    id: str
    tenant_id: str
    caller: str
    request_id: str
    request_fingerprint: str
    recipient_count: int
    accepted_count: int
    created_at: datetime
