"""Translation for the bulk job RPCs: GetBulkJob, ListBulkJobRecipients and CancelBulkJob."""

from __future__ import annotations

from collections.abc import Sequence

from application.ports.repositories import BulkJobRecipientView
from application.use_cases.bulk_jobs import BulkJobReport, CancelOutcome
from domain.bulk_job import BulkJobState
from interfaces.grpc.gen.notify.v1 import notification_pb2 as pb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from interfaces.grpc.mappers import CHANNELS_TO_PB, STATUS_TO_PB, timestamp

STATE_TO_PB: dict[BulkJobState, int] = {
    s: svc.BulkJobState.Value(f"BULK_JOB_STATE_{s.value}") for s in BulkJobState
}


def job_to_pb(report: BulkJobReport) -> svc.BulkJob:
    job, progress = report.job, report.progress
    return svc.BulkJob(
        id=job.id,
        state=STATE_TO_PB[report.state],  # type: ignore[arg-type]
        channel=(
            CHANNELS_TO_PB[job.channel]  # type: ignore[arg-type]
            if job.channel is not None
            else pb.CHANNEL_UNSPECIFIED
        ),
        category=job.category,
        caller_service=job.caller,
        request_id=job.request_id,
        call_count=job.call_count,
        recipient_count=job.recipient_count,
        refused_count=progress.refused,
        accepted_count=progress.accepted,
        suppressed_count=progress.suppressed,
        queued_count=progress.queued,
        sent_count=progress.sent,
        delivered_count=progress.delivered,
        failed_count=progress.failed,
        cancelled_count=progress.cancelled,
        create_time=timestamp(job.created_at),
        update_time=timestamp(job.updated_at),
        cancel_time=timestamp(job.cancelled_at),
    )


def recipient_to_pb(view: BulkJobRecipientView) -> svc.BulkJobRecipient:
    r = view.recipient
    message = svc.BulkJobRecipient(
        position=r.position,
        request_id=r.request_id,
        index=r.call_index,
        user_id=r.user_id,
        notification_id=r.notification_id or "",
        deduplicated=r.deduplicated,
        status_reason=view.status_reason,
    )
    if view.status is not None:
        message.status = STATUS_TO_PB[view.status]  # type: ignore[assignment]
    if r.refusal is not None:
        message.refusal.CopyFrom(
            svc.RecipientRefusal(
                code=r.refusal.code, field=r.refusal.field, description=r.refusal.description
            )
        )
    return message


def get_response(report: BulkJobReport) -> svc.GetBulkJobResponse:
    return svc.GetBulkJobResponse(job=job_to_pb(report))


def list_response(
    page: Sequence[BulkJobRecipientView], token: str
) -> svc.ListBulkJobRecipientsResponse:
    return svc.ListBulkJobRecipientsResponse(
        recipients=[recipient_to_pb(v) for v in page], next_page_token=token
    )


def cancel_response(outcome: CancelOutcome) -> svc.CancelBulkJobResponse:
    return svc.CancelBulkJobResponse(
        job=job_to_pb(outcome.report), cancelled_count=outcome.cancelled
    )
