"""The system clock and time-ordered ids."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class UuidV7Generator:
    """RFC 9562 UUIDv7: a millisecond timestamp then randomness, so new rows append to the
    primary-key index instead of scattering across it."""

    def new_id(self) -> str:
        ms = time.time_ns() // 1_000_000
        value = (ms & ((1 << 48) - 1)) << 80
        value |= int.from_bytes(os.urandom(10), "big") & ((1 << 80) - 1)
        value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
        value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
        return str(uuid.UUID(int=value))
