"""The one table from errors to gRPC statuses: every caller mistake has a precise code."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from application.errors import ConcurrentUpdate, IdempotencyConflict, Unauthenticated, Unavailable
from domain.errors import (
    FieldViolation,
    IllegalTransition,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)
from interfaces.grpc.errors import to_status

CASES: list[tuple[Exception, grpc.StatusCode, type | None]] = [
    (
        ValidationFailed([FieldViolation("user_id", "required")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        error_details_pb2.BadRequest,
    ),
    (NotFound("notification", "n-1"), grpc.StatusCode.NOT_FOUND, error_details_pb2.ResourceInfo),
    (
        IllegalTransition("notification n-1", "SENT", "CANCELLED"),
        grpc.StatusCode.FAILED_PRECONDITION,
        error_details_pb2.PreconditionFailure,
    ),
    (
        PreconditionFailed("channel", "no provider", "CHANNEL_NOT_CONFIGURED"),
        grpc.StatusCode.FAILED_PRECONDITION,
        error_details_pb2.ErrorInfo,
    ),
    (
        IdempotencyConflict("req-1", "n-1"),
        grpc.StatusCode.ALREADY_EXISTS,
        error_details_pb2.ErrorInfo,
    ),
    (Unavailable("postgres"), grpc.StatusCode.UNAVAILABLE, error_details_pb2.RetryInfo),
    (ConcurrentUpdate("notification", "n-1"), grpc.StatusCode.ABORTED, None),
    (Unauthenticated("missing API key"), grpc.StatusCode.UNAUTHENTICATED, None),
]


@pytest.mark.parametrize(
    ("error", "code", "detail"), CASES, ids=[type(c[0]).__name__ for c in CASES]
)
def test_each_error_maps_to_its_code_with_details(
    error: Exception, code: grpc.StatusCode, detail: type | None
) -> None:
    status = to_status(error)
    assert status is not None
    assert status.code == getattr(code_pb2, code.name)
    assert str(error) in status.message
    if detail is not None:
        assert any(d.Is(detail.DESCRIPTOR) for d in status.details)


def test_bad_request_names_every_field() -> None:
    error = ValidationFailed(
        [FieldViolation("user_id", "required"), FieldViolation("address.email", "invalid")]
    )
    status = to_status(error)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    status.details[0].Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["user_id", "address.email"]


def test_unknown_errors_are_not_mapped_so_they_surface_as_internal() -> None:
    assert to_status(RuntimeError("bug")) is None
    assert to_status(KeyError("x")) is None
