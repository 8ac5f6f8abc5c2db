"""notify.v1.NotificationService: decode, call one use case, encode. No rules live here."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from application.use_cases.bulk_send import BulkSend
from application.use_cases.dead_letters import ListDeadLetters, ReplayDeadLetters
from application.use_cases.inbox import GetUnreadCount, MarkAsRead
from application.use_cases.inbox_stream import StreamInbox
from application.use_cases.manage_notification import CancelNotification, GetNotification
from application.use_cases.send_notification import SendNotification
from interfaces.grpc import mappers
from interfaces.grpc.errors import abort_with
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as svc_grpc
from interfaces.grpc.interceptors import current_principal

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
        # Set on shutdown: open streams end (UNAVAILABLE) instead of holding the server's grace.
        self._streams_stopping = asyncio.Event()

    def stop_streams(self) -> None:
        """End every open StreamInbox; call before stopping the server."""
        self._streams_stopping.set()

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
        outcome = await self._bulk_send.execute(current_principal(), mappers.bulk_command(request))
        return mappers.bulk_response(outcome)

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
