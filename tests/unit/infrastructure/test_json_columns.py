"""How JSONB values are written and read: orjson, with json for what orjson refuses."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from infrastructure.persistence.engine import json_dumps, json_loads


def test_values_round_trip_as_the_standard_library_reads_them() -> None:
    value = {
        "history": [{"status": "SENT", "at": "2026-11-22T10:00:00+00:00"}],
        "n": 1.5,
        "é": None,
    }

    assert json.loads(json_dumps(value)) == value
    assert json_loads(json.dumps(value)) == value


def test_an_integer_beyond_64_bits_is_still_written_and_read_exactly() -> None:
    value = {"big": 2**70}

    written = json_dumps(value)

    assert json.loads(written) == value
    assert json_loads(written) == value


def test_datetimes_are_written_as_iso_8601_on_either_path() -> None:
    at = datetime(2026, 11, 22, 7, 30, 0, 123456, tzinfo=UTC)

    assert json.loads(json_dumps({"at": at})) == {"at": at.isoformat()}
    assert json.loads(json_dumps({"at": at, "big": 2**70})) == {
        "at": at.isoformat(),
        "big": 2**70,
    }
