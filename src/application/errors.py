"""Errors of the application layer (beyond the domain's own)."""

from __future__ import annotations


class ApplicationError(Exception):
    pass


class Unauthenticated(ApplicationError):
    """No credentials, or credentials that match no active API key."""


class IdempotencyConflict(ApplicationError):
    """A request_id was reused with a different request."""

    def __init__(self, request_id: str, existing_id: str) -> None:
        self.request_id = request_id
        self.existing_id = existing_id
        super().__init__(
            f"request_id {request_id!r} was already used for a different request "
            f"(notification {existing_id}); use a new request_id for a new notification"
        )


class Unavailable(ApplicationError):
    """A dependency (Postgres, Redis) is unreachable. Retrying with the same request_id is safe."""

    def __init__(self, dependency: str, detail: str = "") -> None:
        self.dependency = dependency
        super().__init__(f"{dependency} is unavailable" + (f": {detail}" if detail else ""))


class ConcurrentUpdate(ApplicationError):
    """Someone else changed the aggregate since it was loaded (optimistic concurrency)."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key} was changed concurrently")


class AlreadyExists(ApplicationError):
    """Creating something whose name is taken."""

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        super().__init__(f"{kind} {key!r} already exists")
