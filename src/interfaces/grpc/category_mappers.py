"""Translation between CategoryService messages and the application's inputs and aggregates."""

from __future__ import annotations

from application.use_cases.categories import CategoryInput
from domain.policy import Category
from interfaces.grpc.enum_names import enum_name
from interfaces.grpc.gen.notify.v1 import category_service_pb2 as pb
from interfaces.grpc.mappers import timestamp


def category_input(message: pb.Category) -> CategoryInput:
    return CategoryInput(
        name=message.name,
        kind=enum_name(pb.CategoryKind, "CATEGORY_KIND_", message.kind),
        per_hour_cap=message.per_hour_cap,
        per_day_cap=message.per_day_cap,
        cap_action=enum_name(pb.CapAction, "CAP_ACTION_", message.cap_action),
        dedup_window_seconds=(
            message.dedup_window_seconds if message.HasField("dedup_window_seconds") else None
        ),
    )


def category_to_pb(c: Category) -> pb.Category:
    message = pb.Category(
        name=c.name,
        kind=pb.CategoryKind.Value(f"CATEGORY_KIND_{c.kind.value}"),
        per_hour_cap=c.limits.per_hour,
        per_day_cap=c.limits.per_day,
        cap_action=pb.CapAction.Value(f"CAP_ACTION_{c.cap_action.value}"),
        update_time=timestamp(c.updated_at),
    )
    if c.dedup_window is not None:
        message.dedup_window_seconds = int(c.dedup_window.total_seconds())
    return message
