"""StreamInbox through the real server: deliveries and reads pushed as they happen, resumed
after a disconnect with no gap and no repeat, bad cursors refused, and grpcurl following it."""

from __future__ import annotations

import json
import queue
import threading
import uuid
from collections.abc import Iterator

import grpc
import pytest

from application.use_cases.inbox_stream import InboxCursors
from interfaces.grpc.gen.notify.v1 import notification_pb2 as pb
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as svc_grpc
from tests.e2e.harness import Caller, Notifyd
from tests.e2e.helpers import eventually, field_violations
from tests.e2e.test_grpcurl import grpcurl

pytestmark = pytest.mark.e2e

# Generous: delivery goes through the worker; wake-ups make it far quicker than this.
WAIT = 20.0
UNREAD = svc.INBOX_EVENT_KIND_UNREAD_COUNT
DELIVERED = svc.INBOX_EVENT_KIND_NOTIFICATION_DELIVERED
READ = svc.INBOX_EVENT_KIND_NOTIFICATIONS_READ


class InboxStream:
    """A StreamInbox call read by a thread into a queue, so a test waits with a timeout."""

    def __init__(
        self, stub: svc_grpc.NotificationServiceStub, caller: Caller, user: str, cursor: str = ""
    ) -> None:
        self.call = stub.StreamInbox(
            svc.StreamInboxRequest(user_id=user, cursor=cursor), metadata=caller.metadata
        )
        self._received: queue.Queue[svc.StreamInboxResponse | grpc.RpcError] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for message in self.call:
                self._received.put(message)
        except grpc.RpcError as error:
            self._received.put(error)

    def next(self) -> svc.StreamInboxResponse:
        try:
            item = self._received.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"no stream event within {WAIT}s") from None
        if isinstance(item, grpc.RpcError):
            raise item
        return item

    def take(self, n: int) -> list[svc.StreamInboxResponse]:
        return [self.next() for _ in range(n)]

    def cancel(self) -> None:
        self.call.cancel()
        self._reader.join(WAIT)


@pytest.fixture
def open_streams() -> Iterator[list[InboxStream]]:
    opened: list[InboxStream] = []
    yield opened
    for stream in opened:
        stream.cancel()


def follow(
    streams: list[InboxStream],
    stub: svc_grpc.NotificationServiceStub,
    caller: Caller,
    user: str,
    cursor: str = "",
) -> InboxStream:
    stream = InboxStream(stub, caller, user, cursor)
    streams.append(stream)
    return stream


def send_in_app(stub: svc_grpc.NotificationServiceStub, caller: Caller, user: str) -> str:
    return stub.SendNotification(
        svc.SendNotificationRequest(
            request_id=f"req-{uuid.uuid4()}",
            user_id=user,
            channel=pb.CHANNEL_IN_APP,
            category="mention",
            content=pb.Content(title="You were mentioned", body=f"in #{uuid.uuid4().hex[:6]}"),
        ),
        metadata=caller.metadata,
    ).notification.id


def test_the_stream_pushes_changes_and_resumes_with_no_gap_and_no_repeat(
    stub: svc_grpc.NotificationServiceStub, acme: Caller, open_streams: list[InboxStream]
) -> None:
    user = f"streamer-{uuid.uuid4()}"
    stream = follow(open_streams, stub, acme, user)
    hello = stream.next()
    assert (hello.kind, hello.unread_count) == (UNREAD, 0)

    sent = {send_in_app(stub, acme, user), send_in_app(stub, acme, user)}
    arrived = stream.take(2)
    assert [e.kind for e in arrived] == [DELIVERED, DELIVERED]
    assert {e.notification.id for e in arrived} == sent
    assert [e.unread_count for e in arrived] == [1, 2]
    for event in arrived:
        assert event.notification.status == pb.NOTIFICATION_STATUS_DELIVERED
        assert event.notification.content.title == "You were mentioned"
        assert event.notification.user_id == user

    first = arrived[0].notification.id
    stub.MarkAsRead(svc.MarkAsReadRequest(ids=[first]), metadata=acme.metadata)
    read = stream.next()
    assert (read.kind, list(read.read_ids), read.unread_count) == (READ, [first], 1)
    assert not read.HasField("notification")

    stream.cancel()
    missed = {send_in_app(stub, acme, user), send_in_app(stub, acme, user)}
    resumed = follow(open_streams, stub, acme, user, read.cursor)
    caught_up = resumed.take(2)
    assert {e.notification.id for e in caught_up} == missed
    assert [e.unread_count for e in caught_up] == [2, 3]
    # Nothing is repeated after them: the next event is the next change.
    stub.MarkAsRead(svc.MarkAsReadRequest(ids=sorted(missed)), metadata=acme.metadata)
    after = resumed.next()
    assert (after.kind, sorted(after.read_ids), after.unread_count) == (READ, sorted(missed), 1)


def test_streams_of_other_users_and_tenants_see_nothing_of_it(
    stub: svc_grpc.NotificationServiceStub,
    acme: Caller,
    globex: Caller,
    open_streams: list[InboxStream],
) -> None:
    user = f"shared-name-{uuid.uuid4()}"
    theirs = follow(open_streams, stub, globex, user)
    assert theirs.next().kind == UNREAD
    other = send_in_app(stub, acme, user)
    # Delivered (and logged) before globex's own: a leak would arrive first.
    eventually(
        lambda: (
            stub.GetNotification(
                svc.GetNotificationRequest(id=other), metadata=acme.metadata
            ).notification.status
        ),
        lambda status: status == pb.NOTIFICATION_STATUS_DELIVERED,
    )
    mine = send_in_app(stub, globex, user)
    event = theirs.next()
    assert (event.notification.id, event.unread_count) == (mine, 1)


@pytest.mark.parametrize("kind", ["garbage", "ahead of the inbox", "another user's"])
def test_a_bad_cursor_is_invalid_argument(
    stub: svc_grpc.NotificationServiceStub, acme: Caller, kind: str
) -> None:
    user = f"cursor-{uuid.uuid4()}"
    cursor = {
        "garbage": "bm90IGEgY3Vyc29y!",
        "ahead of the inbox": InboxCursors().encode("acme", user, 7),
        "another user's": InboxCursors().encode("acme", "someone-else", 0),
    }[kind]
    call = stub.StreamInbox(
        svc.StreamInboxRequest(user_id=user, cursor=cursor), metadata=acme.metadata, timeout=WAIT
    )
    with pytest.raises(grpc.RpcError) as caught:
        next(call)
    error = caught.value
    assert isinstance(error, grpc.RpcError)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cursor" in field_violations(error)


def test_a_stream_needs_a_key(stub: svc_grpc.NotificationServiceStub) -> None:
    call = stub.StreamInbox(svc.StreamInboxRequest(user_id="anyone"), timeout=WAIT)
    with pytest.raises(grpc.RpcError) as caught:
        next(call)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]


def test_grpcurl_follows_an_inbox(notifyd: Notifyd, acme: Caller) -> None:
    user = f"curl-stream-{uuid.uuid4()}"
    done = grpcurl(
        notifyd,
        "notify.v1.NotificationService/StreamInbox",
        flags=(
            "-H",
            f"authorization: Bearer {acme.key}",
            "-d",
            json.dumps({"user_id": user}),
            # The stream never ends by itself; an operator stops it (here: after 3 seconds).
            "-max-time",
            "3",
        ),
    )
    assert "DeadlineExceeded" in done.stderr, done.stderr
    first, _ = json.JSONDecoder().raw_decode(done.stdout.strip())
    assert first["kind"] == "INBOX_EVENT_KIND_UNREAD_COUNT"
    assert first["cursor"]
