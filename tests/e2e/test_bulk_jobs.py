"""Bulk jobs through the real server: counts as they progress, pages of recipients, growing a
job by calls, cancelling midway, and a job that goes on after its caller left."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from interfaces.grpc.gen.notify.v1 import notification_pb2 as pb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as svc_grpc
from interfaces.grpc.gen.notify.v1 import recipient_service_pb2 as rpb
from interfaces.grpc.gen.notify.v1 import recipient_service_pb2_grpc as rpb_grpc
from tests.e2e.conftest import ORDER_SHIPPED
from tests.e2e.harness import Caller, Notifyd, WebhookReceiver
from tests.e2e.helpers import error_reason, eventually, field_violations

pytestmark = pytest.mark.e2e

Stub = svc_grpc.NotificationServiceStub


@pytest.fixture(scope="module")
def caller(notifyd: Notifyd, tmp_path_factory: pytest.TempPathFactory) -> Caller:
    """A tenant of these tests' own, so that their thousands of notifications stay out of
    other tests' counts; with the order_shipped template."""
    issued = notifyd.issue_key(f"bulk-{uuid.uuid4().hex[:8]}", "orders")
    template = tmp_path_factory.mktemp("bulk-templates") / "order_shipped.json"
    template.write_text(json.dumps(ORDER_SHIPPED))
    notifyd.cli(
        "templates", "put", "order_shipped", "--tenant", issued.tenant, "--file", str(template)
    )
    return issued


@pytest.fixture(scope="module")
def recipients(channel: grpc.Channel) -> rpb_grpc.RecipientServiceStub:
    return rpb_grpc.RecipientServiceStub(channel)


def _rid() -> str:
    return f"req-{uuid.uuid4()}"


def _job_id() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


def _struct(values: dict[str, object]) -> Struct:
    s = Struct()
    s.update(values)
    return s


def _in(delta: timedelta) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(datetime.now(UTC) + delta)
    return ts


def _refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def _get(stub: Stub, caller: Caller, job_id: str) -> svc.BulkJob:
    return stub.GetBulkJob(svc.GetBulkJobRequest(job_id=job_id), metadata=caller.metadata).job


def _all_recipients(
    stub: Stub, caller: Caller, job_id: str, size: int
) -> list[svc.BulkJobRecipient]:
    found: list[svc.BulkJobRecipient] = []
    token = ""
    while True:
        page = stub.ListBulkJobRecipients(
            svc.ListBulkJobRecipientsRequest(job_id=job_id, page_size=size, page_token=token),
            metadata=caller.metadata,
        )
        found += page.recipients
        token = page.next_page_token
        if not token:
            return found


def _in_app(
    request_id: str, users: list[str], job_id: str = "", **kw: object
) -> svc.BulkSendRequest:
    """The order_shipped template; a user named "*-novar" leaves out its order_id."""
    return svc.BulkSendRequest(
        request_id=request_id,
        job_id=job_id,
        channel=pb.CHANNEL_IN_APP,
        category="order_shipped",
        template=pb.TemplateReference(name="order_shipped", variables=_struct({"name": "all"})),
        recipients=[
            svc.BulkRecipient(
                user_id=u,
                variables=_struct({} if u.endswith("-novar") else {"order_id": str(i)}),
            )
            for i, u in enumerate(users)
        ],
        **kw,  # type: ignore[arg-type]
    )


def _webhook(
    request_id: str, url: str, count: int, job_id: str, **kw: object
) -> svc.BulkSendRequest:
    return svc.BulkSendRequest(
        request_id=request_id,
        job_id=job_id,
        channel=pb.CHANNEL_WEBHOOK,
        category="order_shipped",
        content=pb.Content(title="Shipped", body="On its way"),
        recipients=[
            svc.BulkRecipient(user_id=f"w{i}", address=pb.Address(webhook_url=f"{url}?n={i}"))
            for i in range(count)
        ],
        **kw,  # type: ignore[arg-type]
    )


def test_a_bulk_of_1000_mixed_recipients_is_counted_and_paged(
    stub: Stub, recipients: rpb_grpc.RecipientServiceStub, caller: Caller
) -> None:
    run = uuid.uuid4().hex[:8]
    users = []
    for i in range(1000):
        if i % 10 == 0:
            users.append(f"{run}-{i}-novar")  # refused: the template needs its order_id
            continue
        user = f"{run}-{i}"
        if i % 10 == 1:
            # Suppressed: opted out of the in-app channel in the directory.
            recipients.UpdatePreferences(
                rpb.UpdatePreferencesRequest(
                    user_id=user,
                    preferences=rpb.Preferences(
                        channels=[
                            rpb.ChannelPreference(
                                category="*", channel=pb.CHANNEL_IN_APP, enabled=False
                            )
                        ]
                    ),
                ),
                metadata=caller.metadata,
            )
        users.append(user)
    job_id = _job_id()

    sent = stub.BulkSend(_in_app(_rid(), users, job_id), metadata=caller.metadata, timeout=60)

    assert sent.job_id == job_id
    assert (sent.accepted_count, sent.refused_count) == (900, 100)
    done = eventually(
        lambda: _get(stub, caller, job_id),
        lambda j: j.state == svc.BULK_JOB_STATE_COMPLETED,
        timeout=90,
    )
    assert (done.recipient_count, done.call_count, done.refused_count) == (1000, 1, 100)
    assert (done.accepted_count, done.suppressed_count, done.delivered_count) == (900, 100, 800)
    assert (done.queued_count, done.sent_count, done.failed_count, done.cancelled_count) == (
        0,
        0,
        0,
        0,
    )
    assert (done.channel, done.category, done.caller_service) == (
        pb.CHANNEL_IN_APP,
        "order_shipped",
        "orders",
    )
    assert done.create_time.ToDatetime() <= done.update_time.ToDatetime()
    assert not done.HasField("cancel_time")

    listed = _all_recipients(stub, caller, job_id, 300)
    assert [r.position for r in listed] == list(range(1000))
    assert [r.user_id for r in listed] == users
    assert [r.index for r in listed] == list(range(1000))
    bad, opted_out, fine = listed[0], listed[1], listed[2]
    assert bad.refusal.code == "INVALID_ARGUMENT"
    assert bad.refusal.field == "recipients[0].template.variables.order_id"
    assert (bad.notification_id, bad.status) == ("", pb.NOTIFICATION_STATUS_UNSPECIFIED)
    assert opted_out.status == pb.NOTIFICATION_STATUS_SUPPRESSED
    assert "opted out" in opted_out.status_reason
    assert fine.status == pb.NOTIFICATION_STATUS_DELIVERED
    assert fine.notification_id == sent.results[2].notification_id
    assert not fine.HasField("refusal")

    # Page sizes: 0 is the default (100); 1000 is the whole job, with no token after it.
    default = stub.ListBulkJobRecipients(
        svc.ListBulkJobRecipientsRequest(job_id=job_id), metadata=caller.metadata
    )
    assert (len(default.recipients), bool(default.next_page_token)) == (100, True)
    whole = stub.ListBulkJobRecipients(
        svc.ListBulkJobRecipientsRequest(job_id=job_id, page_size=1000), metadata=caller.metadata
    )
    assert (len(whole.recipients), whole.next_page_token) == (1000, "")
    one = stub.ListBulkJobRecipients(
        svc.ListBulkJobRecipientsRequest(job_id=job_id, page_size=1), metadata=caller.metadata
    )
    two = stub.ListBulkJobRecipients(
        svc.ListBulkJobRecipientsRequest(
            job_id=job_id, page_size=1, page_token=one.next_page_token
        ),
        metadata=caller.metadata,
    )
    assert [r.position for r in (*one.recipients, *two.recipients)] == [0, 1]


def test_pagination_edges_are_invalid_argument_naming_the_field(
    stub: Stub, caller: Caller, globex: Caller
) -> None:
    first, second = _job_id(), _job_id()
    for job_id in (first, second):
        stub.BulkSend(
            _in_app(_rid(), [f"p{i}" for i in range(5)], job_id), metadata=caller.metadata
        )
    for size in (-1, 1001):
        error = _refused(
            lambda size=size: stub.ListBulkJobRecipients(
                svc.ListBulkJobRecipientsRequest(job_id=first, page_size=size),
                metadata=caller.metadata,
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(field_violations(error)) == {"page_size"}
    page = stub.ListBulkJobRecipients(
        svc.ListBulkJobRecipientsRequest(job_id=first, page_size=2), metadata=caller.metadata
    )
    assert page.next_page_token
    for token in (page.next_page_token, "bm90IG91cnM", "%%%"):
        error = _refused(
            lambda token=token: stub.ListBulkJobRecipients(
                svc.ListBulkJobRecipientsRequest(job_id=second, page_size=2, page_token=token),
                metadata=caller.metadata,
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(field_violations(error)) == {"page_token"}
    # The last page exactly full: no token leading to an empty page.
    last = stub.ListBulkJobRecipients(
        svc.ListBulkJobRecipientsRequest(
            job_id=first, page_size=3, page_token=page.next_page_token
        ),
        metadata=caller.metadata,
    )
    assert ([r.position for r in last.recipients], last.next_page_token) == ([2, 3, 4], "")

    # Another tenant's job does not exist for them; a malformed id names the field.
    for rpc in (
        lambda: stub.GetBulkJob(svc.GetBulkJobRequest(job_id=first), metadata=globex.metadata),
        lambda: stub.ListBulkJobRecipients(
            svc.ListBulkJobRecipientsRequest(job_id=first), metadata=globex.metadata
        ),
        lambda: stub.CancelBulkJob(
            svc.CancelBulkJobRequest(job_id=first), metadata=globex.metadata
        ),
    ):
        assert _refused(rpc).code() == grpc.StatusCode.NOT_FOUND
    error = _refused(
        lambda: stub.GetBulkJob(svc.GetBulkJobRequest(job_id="no/such"), metadata=caller.metadata)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"job_id"}
    assert _get(stub, caller, first).recipient_count == 5


def test_a_job_grows_by_calls_and_a_retry_adds_nothing(
    stub: Stub, notifyd: Notifyd, caller: Caller, globex: Caller
) -> None:
    job_id = _job_id()
    first_users = [f"x{i}" for i in range(6)] + ["x6-novar"]
    second_users = [f"y{i}" for i in range(4)] + ["y4-novar", "y5-novar"]
    first_request = _in_app(_rid(), first_users, job_id)
    first = stub.BulkSend(first_request, metadata=caller.metadata)
    second_request = _in_app(_rid(), second_users, job_id)
    second = stub.BulkSend(second_request, metadata=caller.metadata)
    assert first.job_id == second.job_id == job_id
    rows = notifyd.count_rows(caller.tenant)

    retry = stub.BulkSend(second_request, metadata=caller.metadata)

    assert [r.notification_id for r in retry.results] == [r.notification_id for r in second.results]
    assert [r.refusal for r in retry.results] == [r.refusal for r in second.results]
    assert notifyd.count_rows(caller.tenant) == rows
    job = eventually(
        lambda: _get(stub, caller, job_id), lambda j: j.state == svc.BULK_JOB_STATE_COMPLETED
    )
    assert (job.recipient_count, job.call_count) == (13, 2)
    assert (job.accepted_count, job.refused_count, job.delivered_count) == (10, 3, 10)
    assert job.request_id == first_request.request_id
    listed = _all_recipients(stub, caller, job_id, 5)
    assert [r.position for r in listed] == list(range(13))
    assert [r.user_id for r in listed] == first_users + second_users
    assert [r.index for r in listed[7:]] == list(range(6))
    assert {r.request_id for r in listed[7:]} == {second_request.request_id}

    # The same request_id with other recipients is another request.
    changed = _in_app(second_request.request_id, ["someone-else"], job_id)
    error = _refused(lambda: stub.BulkSend(changed, metadata=caller.metadata))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    # A job sends on one channel and category.
    other_channel = _webhook(_rid(), "https://example.com/h", 1, job_id)
    error = _refused(lambda: stub.BulkSend(other_channel, metadata=caller.metadata))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "BULK_JOB_MISMATCH"
    # Another tenant naming the same job id starts a job of its own.
    theirs = stub.BulkSend(_in_app(_rid(), ["z0"], job_id), metadata=globex.metadata)
    assert theirs.job_id == job_id
    assert _get(stub, globex, job_id).recipient_count == 1
    assert _get(stub, caller, job_id).recipient_count == 13


def test_cancel_midway_stops_what_was_not_sent(
    stub: Stub, caller: Caller, webhook_receiver: WebhookReceiver
) -> None:
    job_id = _job_id()
    now = stub.BulkSend(_webhook(_rid(), webhook_receiver.url, 3, job_id), metadata=caller.metadata)
    eventually(lambda: _get(stub, caller, job_id), lambda j: j.sent_count == 3)
    assert len(webhook_receiver.received) == 3
    # The rest of the job is due in a few seconds; it is cancelled before.
    later = stub.BulkSend(
        _webhook(_rid(), webhook_receiver.url, 20, job_id, schedule_time=_in(timedelta(seconds=3))),
        metadata=caller.metadata,
    )
    assert later.accepted_count == 20

    cancelled = stub.CancelBulkJob(
        svc.CancelBulkJobRequest(job_id=job_id), metadata=caller.metadata
    )

    assert cancelled.cancelled_count == 20
    job = cancelled.job
    assert job.state == svc.BULK_JOB_STATE_CANCELLED
    assert job.HasField("cancel_time")
    assert (job.sent_count, job.cancelled_count, job.queued_count, job.accepted_count) == (
        3,
        20,
        0,
        23,
    )
    # Past their due time: none of them reached the receiver.
    time.sleep(4.5)
    assert len(webhook_receiver.received) == 3
    assert {r.status for r in _all_recipients(stub, caller, job_id, 100)[3:]} == {
        pb.NOTIFICATION_STATUS_CANCELLED
    }
    again = stub.CancelBulkJob(svc.CancelBulkJobRequest(job_id=job_id), metadata=caller.metadata)
    assert again.cancelled_count == 0
    assert again.job.cancel_time == job.cancel_time
    error = _refused(
        lambda: stub.BulkSend(
            _webhook(_rid(), webhook_receiver.url, 1, job_id), metadata=caller.metadata
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "BULK_JOB_CANCELLED"
    assert now.job_id == job_id


def test_a_job_goes_on_after_its_caller_gives_up(stub: Stub, caller: Caller) -> None:
    job_id = _job_id()
    users = [f"gone-{i}" for i in range(1000)]
    # A thousand recipients take the server seconds: the caller stops waiting long before.
    error = _refused(
        lambda: stub.BulkSend(_in_app(_rid(), users, job_id), metadata=caller.metadata, timeout=0.5)
    )
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    def probe() -> svc.BulkJob | None:
        try:
            return _get(stub, caller, job_id)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    job = eventually(
        probe,
        lambda j: j is not None and j.state == svc.BULK_JOB_STATE_COMPLETED,
        timeout=90,
    )
    assert job is not None
    assert (job.recipient_count, job.accepted_count, job.delivered_count) == (1000, 1000, 1000)
