"""The one table from application/domain errors to gRPC status codes, with rich details."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from application.errors import (
    AlreadyExists,
    ConcurrentUpdate,
    IdempotencyConflict,
    Unauthenticated,
    Unavailable,
)
from domain.errors import IllegalTransition, NotFound, PreconditionFailed, ValidationFailed
from interfaces.grpc.request_ids import HEADER as REQUEST_ID_HEADER
from interfaces.grpc.request_ids import serving_request_id

log = logging.getLogger(__name__)

DOMAIN = "notifyd"


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _status(code: grpc.StatusCode, message: str, *details: object) -> status_pb2.Status:
    return status_pb2.Status(
        code=getattr(code_pb2, code.name),
        message=message,
        details=[_pack(d) for d in details],
    )


def _invalid(e: ValidationFailed) -> status_pb2.Status:
    return _status(
        grpc.StatusCode.INVALID_ARGUMENT,
        str(e),
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in e.violations
            ]
        ),
    )


def _not_found(e: NotFound) -> status_pb2.Status:
    return _status(
        grpc.StatusCode.NOT_FOUND,
        str(e),
        error_details_pb2.ResourceInfo(resource_type=e.kind, resource_name=e.key),
    )


def _illegal(e: IllegalTransition) -> status_pb2.Status:
    return _status(
        grpc.StatusCode.FAILED_PRECONDITION,
        str(e),
        error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type="STATUS", subject=e.subject, description=str(e)
                )
            ]
        ),
    )


def _precondition(e: PreconditionFailed) -> status_pb2.Status:
    return _status(
        grpc.StatusCode.FAILED_PRECONDITION,
        str(e),
        error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type=e.reason, subject=e.subject, description=e.description
                )
            ]
        ),
        error_details_pb2.ErrorInfo(reason=e.reason, domain=DOMAIN),
    )


def _conflict(e: IdempotencyConflict) -> status_pb2.Status:
    return _status(
        grpc.StatusCode.ALREADY_EXISTS,
        str(e),
        error_details_pb2.ErrorInfo(
            reason="REQUEST_ID_REUSED",
            domain=DOMAIN,
            metadata={"request_id": e.request_id, "existing_id": e.existing_id},
        ),
    )


def _already_exists(e: AlreadyExists) -> status_pb2.Status:
    return _status(
        grpc.StatusCode.ALREADY_EXISTS,
        str(e),
        error_details_pb2.ResourceInfo(resource_type=e.kind, resource_name=e.key),
    )


def _unavailable(e: Unavailable) -> status_pb2.Status:
    return _status(
        grpc.StatusCode.UNAVAILABLE,
        f"{e}; retrying with the same request_id is safe",
        error_details_pb2.RetryInfo(retry_delay={"seconds": 1}),
        error_details_pb2.ErrorInfo(
            reason="DEPENDENCY_UNAVAILABLE", domain=DOMAIN, metadata={"dependency": e.dependency}
        ),
    )


def _aborted(e: ConcurrentUpdate) -> status_pb2.Status:
    return _status(grpc.StatusCode.ABORTED, f"{e}; retry the request")


def _unauthenticated(e: Unauthenticated) -> status_pb2.Status:
    return _status(grpc.StatusCode.UNAUTHENTICATED, str(e))


# Most specific first; anything not listed is a bug and becomes INTERNAL (and is logged).
ERROR_TABLE: list[tuple[type[Exception], Callable[[Any], status_pb2.Status]]] = [
    (ValidationFailed, _invalid),
    (NotFound, _not_found),
    (IllegalTransition, _illegal),
    (PreconditionFailed, _precondition),
    (IdempotencyConflict, _conflict),
    (AlreadyExists, _already_exists),
    (Unavailable, _unavailable),
    (ConcurrentUpdate, _aborted),
    (Unauthenticated, _unauthenticated),
]


def to_status(error: Exception) -> status_pb2.Status | None:
    for kind, build in ERROR_TABLE:
        if isinstance(error, kind):
            return build(error)
    return None


async def abort_with(context: grpc.aio.ServicerContext, error: Exception) -> NoReturn:
    status = to_status(error)
    if status is None:
        log.exception("unexpected error", exc_info=error)
        status = _status(grpc.StatusCode.INTERNAL, "internal error; it has been logged")
    rich = rpc_status.to_status(status)
    trailers = tuple(rich.trailing_metadata)
    if request_id := serving_request_id():
        trailers += ((REQUEST_ID_HEADER, request_id),)
    await context.abort(rich.code, rich.details, trailers)
    raise AssertionError("abort returned")  # abort always raises
