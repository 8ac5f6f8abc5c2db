"""Which database errors are the caller's NUL character (INVALID_ARGUMENT), and which are not."""

from __future__ import annotations

import psycopg
from sqlalchemy import exc as sa_exc

from infrastructure.persistence.unit_of_work import is_nul_character

BATCH_INSERT = (
    'INSERT INTO "notifications" ("id") SELECT "id" '
    'FROM json_populate_recordset(NULL::"notifications", %s::json)'
)


def data_error(message: str, statement: str = BATCH_INSERT) -> sa_exc.DataError:
    return sa_exc.DataError(statement, None, psycopg.DataError(message))


def test_psycopg_refusing_a_nul_parameter_is_a_nul_character() -> None:
    assert is_nul_character(data_error("PostgreSQL text fields cannot contain NUL (0x00) bytes"))


def test_postgres_refusing_a_nul_escape_in_json_is_a_nul_character() -> None:
    message = (
        "unsupported Unicode escape sequence\n"
        "DETAIL:  \\u0000 cannot be converted to text.\n"
        "CONTEXT:  JSON data, line 1: ..."
    )
    assert is_nul_character(data_error(message))


def test_another_data_error_in_a_statement_naming_null_is_not() -> None:
    error = data_error("value too long for type character varying(3)")
    assert "NUL" in str(error), "the statement's NULL is in SQLAlchemy's text"
    assert not is_nul_character(error)


def test_an_error_that_is_not_a_data_error_is_not() -> None:
    error = sa_exc.OperationalError(BATCH_INSERT, None, psycopg.OperationalError("NUL (0x00)"))
    assert not is_nul_character(error)
