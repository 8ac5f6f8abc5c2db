"""Translation between RecipientService messages and the application's inputs and aggregates."""

from __future__ import annotations

from application.use_cases.recipient_input import (
    CapInput,
    ChannelPreferenceInput,
    DeviceInput,
    PreferencesInput,
    QuietHoursInput,
    RecipientInput,
    WebhookInput,
)
from domain.recipient import Preferences, Recipient
from interfaces.grpc.enum_names import enum_name
from interfaces.grpc.gen.notify.v1 import notification_pb2 as npb
from interfaces.grpc.gen.notify.v1 import recipient_service_pb2 as pb
from interfaces.grpc.mappers import timestamp


def recipient_input(message: pb.Recipient) -> RecipientInput:
    return RecipientInput(
        user_id=message.user_id,
        email=message.email,
        phone=message.phone,
        devices=[
            DeviceInput(enum_name(pb.DevicePlatform, "DEVICE_PLATFORM_", d.platform), d.token)
            for d in message.devices
        ],
        webhook=(
            WebhookInput(message.webhook.url, message.webhook.secret)
            if message.HasField("webhook")
            else None
        ),
        locale=message.locale,
        time_zone=message.time_zone,
    )


def preferences_input(message: pb.Preferences) -> PreferencesInput:
    return PreferencesInput(
        channels=[
            ChannelPreferenceInput(
                c.category, enum_name(npb.Channel, "CHANNEL_", c.channel), c.enabled
            )
            for c in message.channels
        ],
        marketing_opt_out=message.marketing_opt_out,
        quiet_hours=(
            QuietHoursInput(message.quiet_hours.start, message.quiet_hours.end)
            if message.HasField("quiet_hours")
            else None
        ),
        caps=[CapInput(c.category, c.per_hour, c.per_day) for c in message.caps],
    )


def preferences_to_pb(p: Preferences) -> pb.Preferences:
    return pb.Preferences(
        channels=[
            pb.ChannelPreference(
                category=c.category,
                channel=npb.Channel.Value(f"CHANNEL_{c.channel.value}")
                if c.channel
                else npb.CHANNEL_UNSPECIFIED,
                enabled=c.enabled,
            )
            for c in p.channels
        ],
        marketing_opt_out=p.marketing_opt_out,
        quiet_hours=(
            pb.QuietHours(start=f"{p.quiet_hours.start:%H:%M}", end=f"{p.quiet_hours.end:%H:%M}")
            if p.quiet_hours
            else None
        ),
        caps=[
            pb.FrequencyCap(
                category=c.category, per_hour=c.limits.per_hour, per_day=c.limits.per_day
            )
            for c in p.caps
        ],
    )


def recipient_to_pb(r: Recipient) -> pb.Recipient:
    webhook = None
    if r.webhook is not None:
        # The secret is input only: has_secret tells a caller one is set without leaking it.
        webhook = pb.WebhookEndpoint(
            url=r.webhook.url,
            has_secret=bool(r.webhook.secret),
            disable_time=timestamp(r.webhook.disabled_at),
        )
    return pb.Recipient(
        user_id=r.user_id,
        email=r.email.value if r.email else "",
        phone=r.phone.value if r.phone else "",
        devices=[
            pb.PushDevice(
                platform=pb.DevicePlatform.Value(f"DEVICE_PLATFORM_{d.platform.value}"),
                token=d.token,
                invalidate_time=timestamp(d.invalidated_at),
            )
            for d in r.devices
        ],
        webhook=webhook,
        locale=r.locale,
        time_zone=r.time_zone,
        preferences=preferences_to_pb(r.preferences),
        create_time=timestamp(r.created_at),
        update_time=timestamp(r.updated_at),
    )
