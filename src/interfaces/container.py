"""The composition root: every adapter and use case is built here, and nowhere at import time."""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import timedelta

import grpc
import redis.asyncio as aioredis
from dependency_injector import containers, providers

from application.use_cases.administration import CreateApiKey, PutTemplate
from application.use_cases.authenticate import AuthenticateApiKey
from application.use_cases.bulk_jobs import CancelBulkJob, GetBulkJob, ListBulkJobRecipients
from application.use_cases.bulk_send import BulkSend
from application.use_cases.categories import GetCategory, ListCategories, PutCategory
from application.use_cases.dead_letters import ListDeadLetters, ReplayDeadLetters
from application.use_cases.deliver_notification import DeliverNotification
from application.use_cases.engagement import TrackEngagement
from application.use_cases.inbox import GetUnreadCount, MarkAsRead, PruneInboxEvents
from application.use_cases.inbox_stream import StreamInbox
from application.use_cases.manage_notification import CancelNotification, GetNotification
from application.use_cases.notification_listing import ListNotifications
from application.use_cases.policy_gate import PolicyGate
from application.use_cases.preparation import NotificationPreparer
from application.use_cases.recipients import (
    DeleteRecipient,
    GetRecipient,
    UnsubscribeFromMarketing,
    UpdatePreferences,
    UpsertRecipient,
)
from application.use_cases.reconcile_queue import ReconcileQueue
from application.use_cases.send_notification import SendNotification
from application.use_cases.stats import GetStats
from application.use_cases.templates import (
    ActivateTemplateVersion,
    CreateTemplate,
    DeactivateTemplate,
    GetTemplate,
    ListTemplates,
    RenderTemplate,
    UpdateTemplate,
)
from domain.notification import Channel, RetryPolicy
from infrastructure.clock import SystemClock, UuidV7Generator
from infrastructure.config import ConfigError, Settings
from infrastructure.inbox import RedisInboxNotifier
from infrastructure.persistence.engine import create_engine
from infrastructure.persistence.tenant_secrets import TenantWebhookSecrets
from infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from infrastructure.scheduling import RedisLeadership, RedisScheduler, process_holder
from infrastructure.senders import SsrfGuard, WebhookSender
from infrastructure.senders.webhook import WebhookHttp
from infrastructure.telemetry.gauges import GaugeRefresher
from infrastructure.telemetry.logs import bind_request_id, mask
from infrastructure.telemetry.metrics import DeliveryMetrics, GrpcServerMetrics, Metrics
from infrastructure.telemetry.tracing import active_tracing
from infrastructure.templates import JinjaTemplateEngine, JinjaTemplateRenderer
from interfaces.channel_senders import build_channel_senders
from interfaces.grpc.category_servicer import CategoryServicer
from interfaces.grpc.metrics_interceptor import MetricsInterceptor
from interfaces.grpc.notification_servicer import NotificationServicer
from interfaces.grpc.recipient_servicer import RecipientServicer
from interfaces.grpc.request_ids import RequestIdInterceptor
from interfaces.grpc.server import ApiServer
from interfaces.grpc.template_servicer import TemplateServicer
from interfaces.grpc.tracing_interceptor import TracingInterceptor
from interfaces.worker.runner import Worker

log = logging.getLogger(__name__)


def reconciler_term(housekeeping_seconds: float) -> timedelta:
    """The holder extends the reconciler's role before each slice of its scan: the term must
    outlast the rest of a housekeeping round (a slice, inbox pruning, a backoff) and the pause
    until the next, with room to spare, or the role passes between live workers."""
    return timedelta(seconds=max(30.0, 3 * housekeeping_seconds))


def reconciler_sit_out(housekeeping_seconds: float) -> timedelta:
    """A reconciler that failed waits this long before asking for the role again: every other
    worker asks once in the meantime."""
    return timedelta(seconds=2 * housekeeping_seconds)


# None of these clients connects when built (connections open on first use), so they are
# plain singletons; close_clients() releases them at shutdown.


def redis_client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def _server_observers(
    settings: Settings,
    tracing: grpc.aio.ServerInterceptor,
    request_ids: grpc.aio.ServerInterceptor,
    rpc_metrics: Callable[[], grpc.aio.ServerInterceptor],
) -> list[grpc.aio.ServerInterceptor]:
    """Outermost first; the metrics interceptor (last) sees every call's final status. With
    metrics off nothing would ever read what it counts, so it is left out."""
    observers = [tracing, request_ids]
    if settings.metrics_address() is not None:
        observers.append(rpc_metrics())
    return observers


def _retry_policies(settings: Settings) -> dict[Channel, RetryPolicy]:
    return {
        channel: RetryPolicy(
            max_attempts=settings.attempts_for(channel.value),
            base_delay=timedelta(seconds=settings.retry_base_seconds),
            max_delay=timedelta(seconds=settings.retry_max_seconds),
        )
        for channel in Channel
    }


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)

    clock = providers.Singleton(SystemClock)
    ids = providers.Singleton(UuidV7Generator)
    engine = providers.Singleton(
        create_engine, settings.provided.database_url, settings.provided.db_pool_size
    )
    redis = providers.Singleton(redis_client, settings.provided.redis_url)
    http = providers.Singleton(WebhookHttp)
    # What the CLI's configure_tracing() set up from OTEL_*; disabled, nothing is traced.
    tracing = providers.Singleton(active_tracing)
    # One registry per process (API and worker share it in `run`); the CLI serves it.
    metrics = providers.Singleton(Metrics)
    delivery_metrics = providers.Singleton(DeliveryMetrics, metrics)
    rpc_metrics = providers.Factory(
        MetricsInterceptor, providers.Singleton(GrpcServerMetrics, metrics)
    )

    uow = providers.Singleton(SqlUnitOfWorkFactory, engine)
    scheduler = providers.Singleton(
        RedisScheduler,
        redis,
        namespace=settings.provided.redis_namespace,
        starvation_after=providers.Factory(timedelta, seconds=settings.provided.starvation_seconds),
        trace_context=tracing.provided.context_source,
    )
    template_engine = providers.Singleton(JinjaTemplateEngine)
    renderer = providers.Singleton(JinjaTemplateRenderer, uow, template_engine)
    webhook_secrets = providers.Singleton(TenantWebhookSecrets, uow)
    ssrf_guard = providers.Singleton(
        SsrfGuard, allow_private=settings.provided.allow_private_targets
    )
    webhook_sender = providers.Singleton(
        WebhookSender,
        http,
        webhook_secrets,
        ssrf_guard,
        timeout=settings.provided.webhook_timeout_seconds,
    )
    channel_senders = providers.Singleton(
        build_channel_senders,
        settings,
        webhook=webhook_sender,
        redis=redis,
        uow=uow,
        clock=clock,
        tracing=tracing,
    )
    senders = channel_senders.provided.senders
    gauges = providers.Singleton(
        GaugeRefresher,
        metrics,
        scheduler,
        clock,
        breaker=channel_senders.provided.breaker,
        guarded=channel_senders.provided.guarded,
        unguarded=channel_senders.provided.unguarded,
    )
    retry_policies = providers.Singleton(_retry_policies, settings)
    preparer = providers.Singleton(
        NotificationPreparer,
        renderer,
        ids,
        channel_senders.provided.channels,
        ssrf_guard.provided.url_refusal,
    )

    policy_gate = providers.Singleton(
        PolicyGate,
        providers.Factory(timedelta, seconds=settings.provided.dedup_window_seconds),
    )
    send_notification = providers.Singleton(
        SendNotification,
        uow,
        # The enqueue as its own span (when tracing): RPC -> enqueue -> deliver -> provider.
        tracing.provided.traced_scheduler.call(scheduler),
        preparer,
        clock,
        policy_gate,
        observer=delivery_metrics,
    )
    bulk_send = providers.Singleton(
        BulkSend,
        uow,
        tracing.provided.traced_scheduler.call(scheduler),
        preparer,
        clock,
        ids,
        policy_gate,
        observer=delivery_metrics,
    )
    get_notification = providers.Singleton(GetNotification, uow)
    cancel_notification = providers.Singleton(CancelNotification, uow, scheduler, clock)
    inbox_notifier = providers.Singleton(
        RedisInboxNotifier, redis, namespace=settings.provided.redis_namespace
    )
    mark_as_read = providers.Singleton(MarkAsRead, uow, clock, inbox_notifier)
    stream_inbox = providers.Singleton(StreamInbox, uow, inbox_notifier)
    unread_count = providers.Singleton(GetUnreadCount, uow)
    authenticate = providers.Singleton(
        AuthenticateApiKey, uow, ttl_seconds=settings.provided.auth_cache_seconds
    )
    deliver = providers.Singleton(
        DeliverNotification,
        uow,
        scheduler,
        senders,
        retry_policies,
        clock,
        providers.Object(random.random),
        lease=providers.Factory(timedelta, seconds=settings.provided.lease_seconds),
        inbox_notifier=inbox_notifier,
        observer=delivery_metrics,
    )
    leadership = providers.Singleton(
        RedisLeadership,
        redis,
        holder=providers.Callable(process_holder),
        namespace=settings.provided.redis_namespace,
    )
    reconcile = providers.Singleton(
        ReconcileQueue,
        uow,
        scheduler,
        clock,
        leadership,
        grace=providers.Factory(timedelta, seconds=settings.provided.reconcile_grace_seconds),
        term=providers.Callable(reconciler_term, settings.provided.housekeeping_seconds),
        sit_out=providers.Callable(reconciler_sit_out, settings.provided.housekeeping_seconds),
    )
    list_dead_letters = providers.Singleton(ListDeadLetters, uow)
    replay_dead_letters = providers.Singleton(ReplayDeadLetters, uow, scheduler, clock)
    create_api_key = providers.Singleton(CreateApiKey, uow, clock, ids)
    create_template = providers.Singleton(CreateTemplate, uow, template_engine, clock)
    update_template = providers.Singleton(UpdateTemplate, uow, template_engine, clock)
    put_template = providers.Singleton(PutTemplate, create_template, update_template)

    servicer = providers.Singleton(
        NotificationServicer,
        send_notification,
        bulk_send,
        get_notification,
        cancel_notification,
        mark_as_read,
        unread_count,
        list_dead_letters,
        replay_dead_letters,
        stream_inbox,
        list_notifications=providers.Singleton(ListNotifications, uow),
        track_engagement=providers.Singleton(TrackEngagement, uow, clock, inbox_notifier),
        get_stats=providers.Singleton(GetStats, uow, clock),
        get_bulk_job=providers.Singleton(GetBulkJob, uow),
        list_bulk_job_recipients=providers.Singleton(ListBulkJobRecipients, uow),
        cancel_bulk_job=providers.Singleton(CancelBulkJob, uow, scheduler, clock),
    )
    recipient_servicer = providers.Singleton(
        RecipientServicer,
        providers.Singleton(UpsertRecipient, uow, clock),
        providers.Singleton(GetRecipient, uow),
        providers.Singleton(DeleteRecipient, uow, scheduler, clock),
        providers.Singleton(UpdatePreferences, uow, clock),
        providers.Singleton(UnsubscribeFromMarketing, uow, clock),
    )
    category_servicer = providers.Singleton(
        CategoryServicer,
        providers.Singleton(PutCategory, uow, clock),
        providers.Singleton(GetCategory, uow),
        providers.Singleton(ListCategories, uow),
    )
    template_servicer = providers.Singleton(
        TemplateServicer,
        create_template,
        update_template,
        providers.Singleton(GetTemplate, uow),
        providers.Singleton(ListTemplates, uow),
        providers.Singleton(ActivateTemplateVersion, uow, clock),
        providers.Singleton(DeactivateTemplate, uow, clock),
        providers.Singleton(RenderTemplate, uow, template_engine),
    )
    api_server = providers.Factory(
        ApiServer,
        servicer,
        authenticate,
        settings.provided.listen,
        recipients=recipient_servicer,
        categories=category_servicer,
        templates=template_servicer,
        reuse_port=settings.provided.reuse_port,
        observers=providers.Callable(
            _server_observers,
            settings,
            providers.Factory(
                TracingInterceptor, tracing.provided.server_tracer, providers.Object(mask)
            ),
            providers.Factory(RequestIdInterceptor, providers.Object(bind_request_id)),
            rpc_metrics.provider,
        ),
    )
    worker = providers.Factory(
        Worker,
        scheduler,
        deliver,
        reconcile,
        clock,
        providers.Singleton(PruneInboxEvents, uow, clock),
        concurrency=settings.provided.worker_concurrency,
        lease=providers.Factory(timedelta, seconds=settings.provided.lease_seconds),
        poll_interval=settings.provided.poll_interval_seconds,
        housekeeping_interval=settings.provided.housekeeping_seconds,
        delivery_span=tracing.provided.delivery_spans,
    )


async def close_clients(container: Container) -> None:
    """Release the pooled connections. Building an unused client here costs nothing: none of
    them connects until first use. One failing close does not keep the others open."""
    closers: list[Callable[[], Awaitable[None]]] = [
        container.http().aclose,
        container.inbox_notifier().close,
    ]
    # Incomplete provider settings: never built, as this command had no use for them.
    with contextlib.suppress(ConfigError):
        closers.append(container.channel_senders().close)
    closers += [container.redis().aclose, container.engine().dispose]
    for close in closers:
        try:
            await close()
        except Exception:
            log.warning("closing %s failed", close, exc_info=True)
