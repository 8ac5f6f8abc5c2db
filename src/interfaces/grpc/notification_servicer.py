"""notify.v1.NotificationService: decode, call one use case, encode. No rules live here."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import grpc

from application.use_cases.bulk_jobs import CancelBulkJob, GetBulkJob, ListBulkJobRecipients
from application.use_cases.bulk_send import BulkSend
from application.use_cases.dead_letters import ListDeadLetters, ReplayDeadLetters
from application.use_cases.engagement import TrackEngagement
from application.use_cases.inbox import GetUnreadCount, MarkAsRead
from application.use_cases.inbox_stream import StreamInbox
from application.use_cases.manage_notification import CancelNotification, GetNotification
from application.use_cases.notification_listing import ListNotifications
from application.use_cases.send_notification import SendNotification
from application.use_cases.stats import GetStats
from interfaces.grpc import bulk_mappers, mappers, record_mappers
from interfaces.grpc.errors import abort_with
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as svc_grpc
from interfaces.grpc.interceptors import current_principal

log = logging.getLogger(__name__)

T = TypeVar("T")
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Method = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]
StreamMethod = Callable[[Any, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]


def translate_errors(method: Method[Req, Resp]) -> Method[Req, Resp]:
    """Every failure leaves through the one error table (errors.py), never as UNKNOWN."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await abort_with(context, error)

    return wrapper


def translate_stream_errors(method: StreamMethod[Req, Resp]) -> StreamMethod[Req, Resp]:
    """translate_errors for server-streaming methods: a failure before or between messages
    ends the stream with its status (messages already sent stay sent)."""

    @functools.wraps(method)
    async def wrapper(
        self: Any, request: Req, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Resp]:
        try:
            async for item in method(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await abort_with(context, error)

    return wrapper


def _log_failure_of_orphan(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("work whose caller went away failed", exc_info=error)


class NotificationServicer(svc_grpc.NotificationServiceServicer):
    def __init__(
        self,
        send: SendNotification,
        bulk_send: BulkSend,
        get: GetNotification,
        cancel: CancelNotification,
        mark_as_read: MarkAsRead,
        unread_count: GetUnreadCount,
        list_dead_letters: ListDeadLetters,
        replay_dead_letters: ReplayDeadLetters,
        stream_inbox: StreamInbox,
        *,
        list_notifications: ListNotifications,
        track_engagement: TrackEngagement,
        get_stats: GetStats,
        get_bulk_job: GetBulkJob,
        list_bulk_job_recipients: ListBulkJobRecipients,
        cancel_bulk_job: CancelBulkJob,
    ) -> None:
        self._send = send
        self._bulk_send = bulk_send
        self._get = get
        self._cancel = cancel
        self._mark_as_read = mark_as_read
        self._unread_count = unread_count
        self._list_dead_letters = list_dead_letters
        self._replay_dead_letters = replay_dead_letters
        self._stream_inbox = stream_inbox
        self._list_notifications = list_notifications
        self._track_engagement = track_engagement
        self._get_stats = get_stats
        self._get_bulk_job = get_bulk_job
        self._list_bulk_job_recipients = list_bulk_job_recipients
        self._cancel_bulk_job = cancel_bulk_job
        # Work that goes on after its caller left (the loop holds tasks only weakly).
        self._detached: set[asyncio.Task[Any]] = set()
        # Set on shutdown: open streams end (UNAVAILABLE) instead of holding the server's grace.
        self._streams_stopping = asyncio.Event()

    def stop_streams(self) -> None:
        """End every open StreamInbox; call before stopping the server."""
        self._streams_stopping.set()

    async def finish_detached(self) -> None:
        """Wait for work whose callers went away; call at shutdown, under a time limit."""
        if self._detached:
            await asyncio.wait(set(self._detached))

    async def _survive_cancellation(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` to its end even if the RPC is cancelled (a deadline, a disconnect):
        the caller learns the outcome by retrying with the same request_id."""
        task = asyncio.ensure_future(work)
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_log_failure_of_orphan)
            raise

    @translate_errors
    async def SendNotification(
        self, request: svc.SendNotificationRequest, context: grpc.aio.ServicerContext
    ) -> svc.SendNotificationResponse:
        outcome = await self._send.execute(current_principal(), mappers.send_command(request))
        return svc.SendNotificationResponse(
            notification=mappers.notification_to_pb(outcome.notification),
            replayed=outcome.replayed,
            deduplicated=outcome.deduplicated,
        )

    @translate_errors
    async def BulkSend(
        self, request: svc.BulkSendRequest, context: grpc.aio.ServicerContext
    ) -> svc.BulkSendResponse:
        # A job runs to its end once started, whether or not its caller waits for the answer.
        outcome = await self._survive_cancellation(
            self._bulk_send.execute(current_principal(), mappers.bulk_command(request))
        )
        return mappers.bulk_response(outcome)

    @translate_errors
    async def GetBulkJob(
        self, request: svc.GetBulkJobRequest, context: grpc.aio.ServicerContext
    ) -> svc.GetBulkJobResponse:
        report = await self._get_bulk_job.execute(current_principal(), request.job_id)
        return bulk_mappers.get_response(report)

    @translate_errors
    async def ListBulkJobRecipients(
        self, request: svc.ListBulkJobRecipientsRequest, context: grpc.aio.ServicerContext
    ) -> svc.ListBulkJobRecipientsResponse:
        page, token = await self._list_bulk_job_recipients.execute(
            current_principal(), request.job_id, request.page_size, request.page_token
        )
        return bulk_mappers.list_response(page, token)

    @translate_errors
    async def CancelBulkJob(
        self, request: svc.CancelBulkJobRequest, context: grpc.aio.ServicerContext
    ) -> svc.CancelBulkJobResponse:
        outcome = await self._cancel_bulk_job.execute(current_principal(), request.job_id)
        return bulk_mappers.cancel_response(outcome)

    @translate_errors
    async def GetNotification(
        self, request: svc.GetNotificationRequest, context: grpc.aio.ServicerContext
    ) -> svc.GetNotificationResponse:
        n = await self._get.execute(current_principal(), request.id)
        return svc.GetNotificationResponse(notification=mappers.notification_to_pb(n))

    @translate_errors
    async def CancelNotification(
        self, request: svc.CancelNotificationRequest, context: grpc.aio.ServicerContext
    ) -> svc.CancelNotificationResponse:
        n = await self._cancel.execute(current_principal(), request.id)
        return svc.CancelNotificationResponse(notification=mappers.notification_to_pb(n))

    @translate_errors
    async def MarkAsRead(
        self, request: svc.MarkAsReadRequest, context: grpc.aio.ServicerContext
    ) -> svc.MarkAsReadResponse:
        marked = await self._mark_as_read.execute(current_principal(), list(request.ids))
        return svc.MarkAsReadResponse(marked_count=marked)

    @translate_errors
    async def GetUnreadCount(
        self, request: svc.GetUnreadCountRequest, context: grpc.aio.ServicerContext
    ) -> svc.GetUnreadCountResponse:
        count = await self._unread_count.execute(current_principal(), request.user_id)
        return svc.GetUnreadCountResponse(unread_count=count)

    @translate_errors
    async def ListDeadLetters(
        self, request: svc.ListDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> svc.ListDeadLettersResponse:
        page, token = await self._list_dead_letters.execute(
            current_principal(),
            mappers.dead_letter_query(request),
            request.page_size,
            request.page_token,
        )
        return svc.ListDeadLettersResponse(
            notifications=[mappers.notification_to_pb(n) for n in page], next_page_token=token
        )

    @translate_errors
    async def ReplayDeadLetters(
        self, request: svc.ReplayDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> svc.ReplayDeadLettersResponse:
        replayed = await self._replay_dead_letters.execute(current_principal(), list(request.ids))
        return svc.ReplayDeadLettersResponse(
            notifications=[mappers.notification_to_pb(n) for n in replayed]
        )

    @translate_errors
    async def ListNotifications(
        self, request: svc.ListNotificationsRequest, context: grpc.aio.ServicerContext
    ) -> svc.ListNotificationsResponse:
        page, token = await self._list_notifications.execute(
            current_principal(),
            record_mappers.notification_query(request),
            request.page_size,
            request.page_token,
        )
        return record_mappers.list_response(page, token)

    @translate_errors
    async def TrackEngagement(
        self, request: svc.TrackEngagementRequest, context: grpc.aio.ServicerContext
    ) -> svc.TrackEngagementResponse:
        given = record_mappers.engagement_input(request)
        tracked = await self._track_engagement.execute(
            current_principal(), given.notification_id, given.action, given.event_time
        )
        return record_mappers.track_response(tracked)

    @translate_errors
    async def GetStats(
        self, request: svc.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> svc.GetStatsResponse:
        given = record_mappers.stats_input(request)
        report = await self._get_stats.execute(
            current_principal(), given.start, given.end, given.channel, given.category
        )
        return record_mappers.stats_response(report)

    @translate_stream_errors
    async def StreamInbox(
        self, request: svc.StreamInboxRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[svc.StreamInboxResponse]:
        updates = self._stream_inbox.execute(
            current_principal(), request.user_id, request.cursor, self._streams_stopping
        )
        async for update in updates:
            yield mappers.inbox_update_to_pb(update)
        # Only a shutdown ends a stream from our side; the client resumes elsewhere.
        await context.abort(
            grpc.StatusCode.UNAVAILABLE,
            "the server is shutting down; reconnect with the cursor of the last event",
        )
