"""Errors the domain raises. The gRPC edge maps each kind to one status code."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


class DomainError(Exception):
    """Base for every rule the domain refuses to break."""


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request, named by its path in the contract (e.g. ``content.title``)."""

    field: str
    description: str


class ValidationFailed(DomainError):
    """The caller's input is invalid; every violation names the offending field."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        if not violations:
            raise ValueError("ValidationFailed needs at least one violation")
        self.violations = tuple(violations)
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))

    @classmethod
    def single(cls, field: str, description: str) -> ValidationFailed:
        return cls([FieldViolation(field, description)])


class Violations:
    """Collects field violations so a caller learns about every bad field at once."""

    def __init__(self) -> None:
        self._items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self._items.append(FieldViolation(field, description))

    def extend(self, error: ValidationFailed) -> None:
        self._items.extend(error.violations)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self) -> Iterator[FieldViolation]:
        return iter(self._items)

    def raise_if_any(self) -> None:
        if self._items:
            raise ValidationFailed(self._items)


class IllegalTransition(DomainError):
    """A status change the state machine does not allow."""

    def __init__(self, subject: str, current: str, attempted: str) -> None:
        self.subject = subject
        self.current = current
        self.attempted = attempted
        super().__init__(f"{subject} is {current}; it cannot become {attempted}")


class NotFound(DomainError):
    """The thing does not exist, or belongs to another tenant (the caller cannot tell which)."""

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        super().__init__(f"{kind} {key!r} not found")


class PreconditionFailed(DomainError):
    """The request is well-formed but the system is not in a state that allows it."""

    def __init__(self, subject: str, description: str, reason: str = "PRECONDITION_FAILED") -> None:
        self.subject = subject
        self.description = description
        self.reason = reason
        super().__init__(f"{subject}: {description}")
