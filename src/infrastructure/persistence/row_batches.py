"""Inserting many rows in one statement whose text does not depend on how many there are.

SQLAlchemy runs an executemany INSERT as multi-row VALUES lists ("insertmanyvalues"): one
placeholder per value, so the SQL text grows with the batch. psycopg caches its conversion of
a query's placeholders only for short queries, and re-parsing a 256-row insert of 37 columns
took more CPU than everything else in a batch of sends. Here each column travels as one array
and ``unnest`` turns the arrays back into rows: the text is fixed, parsed once, and the server
can keep it prepared. The arrays go in binary (``%b``): psycopg's text dumper escapes every
element with a regex, ten times slower for text and timestamps.

Reads of many keys likewise compare with ``= ANY(array)`` (``any_of``): an expanding IN list
renders one placeholder per key, so its text changes with the number of keys."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from psycopg.types.json import Jsonb
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def any_of(column: sa.Column[Any], name: str) -> sa.ColumnElement[bool]:
    """``column = ANY(:name)``, ``name`` bound to a list of keys."""
    return column == sa.func.any(sa.bindparam(name, type_=postgresql.ARRAY(column.type)))


class RowBatchInsert:
    """``INSERT INTO table (columns) SELECT * FROM unnest(arrays) [suffix]`` for one table."""

    def __init__(self, table: sa.Table, suffix: str = "") -> None:
        self._columns = [c.name for c in table.c]
        self._json = {c.name for c in table.c if isinstance(c.type, sa.JSON)}
        arrays = ", ".join(f"%b::{c.type.compile(dialect=_DIALECT)}[]" for c in table.c)
        names = ", ".join(f'"{name}"' for name in self._columns)
        self._sql = f'INSERT INTO "{table.name}" ({names}) SELECT * FROM unnest({arrays}) {suffix}'

    async def execute(
        self, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]
    ) -> sa.CursorResult[Any]:
        """Every row must give every column of the table."""
        arrays: list[list[Any]] = []
        for name in self._columns:
            if name in self._json:
                arrays.append([None if row[name] is None else Jsonb(row[name]) for row in rows])
            else:
                arrays.append([row[name] for row in rows])
        return await conn.exec_driver_sql(self._sql, tuple(arrays))
