"""Notification ids are RFC 9562 UUIDv7: parseable, version 7, time first, and unique."""

from __future__ import annotations

import time
import uuid

from infrastructure.clock import UuidV7Generator


def test_an_id_is_a_canonical_version_7_uuid_carrying_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    text = UuidV7Generator().new_id()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(text)
    assert str(parsed) == text
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert before <= parsed.int >> 80 <= after


def test_ids_are_unique_and_later_milliseconds_sort_later() -> None:
    ids = UuidV7Generator()
    first = [ids.new_id() for _ in range(5_000)]
    time.sleep(0.002)
    later = ids.new_id()
    assert len(set(first)) == len(first)
    assert all(i < later for i in first)
    # 74 random bits: across 5,000 ids each bit position takes both values.
    randoms = [uuid.UUID(i).int & ((1 << 62) - 1) for i in first]
    assert all(any(r >> bit & 1 for r in randoms) for bit in range(62))
    assert all(any(not r >> bit & 1 for r in randoms) for bit in range(62))
