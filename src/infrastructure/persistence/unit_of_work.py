"""The SQL unit of work: one transaction on one connection, rolled back unless committed."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from application.errors import Unavailable
from application.ports.repositories import (
    ApiKeyRepository,
    BulkJobRepository,
    CategoryRepository,
    InboxEventRepository,
    NotificationRepository,
    RecipientRepository,
    SuppressionRepository,
    TemplateRepository,
    TenantRepository,
)
from domain.errors import ValidationFailed
from infrastructure.persistence.bulk_job_repository import SqlBulkJobRepository
from infrastructure.persistence.category_repository import SqlCategoryRepository
from infrastructure.persistence.directory_repositories import (
    SqlApiKeyRepository,
    SqlTenantRepository,
)
from infrastructure.persistence.inbox_repository import SqlInboxEventRepository
from infrastructure.persistence.notification_repository import SqlNotificationRepository
from infrastructure.persistence.recipient_repository import SqlRecipientRepository
from infrastructure.persistence.suppression_repository import SqlSuppressionRepository
from infrastructure.persistence.template_repository import SqlTemplateRepository

# Errors that mean "the database could not be reached or dropped us", not "the SQL was wrong".
_UNAVAILABLE = (sa_exc.OperationalError, sa_exc.InterfaceError, OSError, TimeoutError)


def is_nul_character(error: BaseException) -> bool:
    """psycopg refuses NUL in a text parameter; Postgres refuses it (as \\u0000) in JSON read
    into text. Only the driver's message is read: SQLAlchemy's adds the statement, whose
    ``NULL`` would match."""
    if not isinstance(error, sa_exc.DataError):
        return False
    text = str(error.orig)
    return "NUL (0x00)" in text or "\\u0000" in text


def is_unavailable(error: BaseException) -> bool:
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, _UNAVAILABLE)


class SqlUnitOfWork:
    # Declared as the ports (the UnitOfWork protocol's attributes are invariant).
    notifications: NotificationRepository
    bulk_jobs: BulkJobRepository
    api_keys: ApiKeyRepository
    tenants: TenantRepository
    templates: TemplateRepository
    recipients: RecipientRepository
    categories: CategoryRepository
    suppressions: SuppressionRepository
    inbox: InboxEventRepository

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: AsyncConnection | None = None
        self._transaction: AsyncTransaction | None = None

    async def __aenter__(self) -> Self:
        try:
            self._connection = await self._engine.connect()
            self._transaction = await self._connection.begin()
        except Exception as error:
            await self._close()
            if is_unavailable(error):
                raise Unavailable("postgres", str(error).splitlines()[0]) from error
            raise
        self.notifications = SqlNotificationRepository(self._connection)
        self.api_keys = SqlApiKeyRepository(self._connection)
        self.tenants = SqlTenantRepository(self._connection)
        self.templates = SqlTemplateRepository(self._connection)
        self.bulk_jobs = SqlBulkJobRepository(self._connection)
        self.recipients = SqlRecipientRepository(self._connection)
        self.categories = SqlCategoryRepository(self._connection)
        self.suppressions = SqlSuppressionRepository(self._connection)
        self.inbox = SqlInboxEventRepository(self._connection)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._transaction is not None and self._transaction.is_active:
                await self._transaction.rollback()
        except Exception:
            pass
        finally:
            await self._close()
        if exc is not None and is_unavailable(exc):
            raise Unavailable("postgres", str(exc).splitlines()[0]) from exc
        if exc is not None and is_nul_character(exc):
            # Postgres text cannot hold NUL; that is the caller's input, not our failure.
            raise ValidationFailed.single(
                "request", "text fields cannot contain NUL (\\x00) characters"
            ) from exc

    async def commit(self) -> None:
        assert self._transaction is not None, "commit outside the unit of work"
        try:
            await self._transaction.commit()
        except Exception as error:
            if is_unavailable(error):
                raise Unavailable("postgres", str(error).splitlines()[0]) from error
            raise

    async def _close(self) -> None:
        if self._connection is not None:
            try:
                await self._connection.close()
            finally:
                self._connection = None
                self._transaction = None


class SqlUnitOfWorkFactory:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    def __call__(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self._engine)
