"""notify.v1.RecipientService: decode, call one use case, encode. No rules live here."""

from __future__ import annotations

import grpc

from application.use_cases.recipients import (
    DeleteRecipient,
    GetRecipient,
    UnsubscribeFromMarketing,
    UpdatePreferences,
    UpsertRecipient,
)
from domain.errors import ValidationFailed
from interfaces.grpc import recipient_mappers as m
from interfaces.grpc.gen.notify.v1 import recipient_service_pb2 as pb
from interfaces.grpc.gen.notify.v1 import recipient_service_pb2_grpc as pb_grpc
from interfaces.grpc.interceptors import current_principal
from interfaces.grpc.notification_servicer import translate_errors


class RecipientServicer(pb_grpc.RecipientServiceServicer):
    def __init__(
        self,
        upsert: UpsertRecipient,
        get: GetRecipient,
        delete: DeleteRecipient,
        update_preferences: UpdatePreferences,
        unsubscribe: UnsubscribeFromMarketing,
    ) -> None:
        self._upsert = upsert
        self._get = get
        self._delete = delete
        self._update_preferences = update_preferences
        self._unsubscribe = unsubscribe

    @translate_errors
    async def UpsertRecipient(
        self, request: pb.UpsertRecipientRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertRecipientResponse:
        recipient = request.recipient
        preferences = (
            m.preferences_input(recipient.preferences)
            if recipient.HasField("preferences")
            else None
        )
        outcome = await self._upsert.execute(
            current_principal(), m.recipient_input(recipient), preferences
        )
        return pb.UpsertRecipientResponse(
            recipient=m.recipient_to_pb(outcome.recipient), created=outcome.created
        )

    @translate_errors
    async def GetRecipient(
        self, request: pb.GetRecipientRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRecipientResponse:
        found = await self._get.execute(current_principal(), request.user_id)
        return pb.GetRecipientResponse(recipient=m.recipient_to_pb(found))

    @translate_errors
    async def DeleteRecipient(
        self, request: pb.DeleteRecipientRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteRecipientResponse:
        outcome = await self._delete.execute(current_principal(), request.user_id)
        return pb.DeleteRecipientResponse(
            erased_notification_count=outcome.erased,
            cancelled_notification_count=outcome.cancelled,
        )

    @translate_errors
    async def UpdatePreferences(
        self, request: pb.UpdatePreferencesRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdatePreferencesResponse:
        if not request.HasField("preferences"):
            # An empty message would silently re-subscribe the recipient to everything.
            raise ValidationFailed.single(
                "preferences", "required: the preferences in full (send them all to change one)"
            )
        updated = await self._update_preferences.execute(
            current_principal(), request.user_id, m.preferences_input(request.preferences)
        )
        return pb.UpdatePreferencesResponse(recipient=m.recipient_to_pb(updated))

    @translate_errors
    async def UnsubscribeFromMarketing(
        self, request: pb.UnsubscribeFromMarketingRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnsubscribeFromMarketingResponse:
        updated = await self._unsubscribe.execute(current_principal(), request.user_id)
        return pb.UnsubscribeFromMarketingResponse(recipient=m.recipient_to_pb(updated))
