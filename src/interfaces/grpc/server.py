"""The grpc.aio server: NotificationService, health, reflection, interceptors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from application.use_cases.authenticate import AuthenticateApiKey
from interfaces.grpc.category_servicer import CategoryServicer
from interfaces.grpc.gen.notify.v1 import category_service_pb2 as category_svc
from interfaces.grpc.gen.notify.v1 import category_service_pb2_grpc as category_grpc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2 as svc
from interfaces.grpc.gen.notify.v1 import notification_service_pb2_grpc as svc_grpc
from interfaces.grpc.gen.notify.v1 import recipient_service_pb2 as recipient_svc
from interfaces.grpc.gen.notify.v1 import recipient_service_pb2_grpc as recipient_grpc
from interfaces.grpc.gen.notify.v1 import template_service_pb2 as template_svc
from interfaces.grpc.gen.notify.v1 import template_service_pb2_grpc as template_grpc
from interfaces.grpc.interceptors import AuthInterceptor
from interfaces.grpc.notification_servicer import NotificationServicer
from interfaces.grpc.recipient_servicer import RecipientServicer
from interfaces.grpc.template_servicer import TemplateServicer

log = logging.getLogger(__name__)

SERVICE_NAME = svc.DESCRIPTOR.services_by_name["NotificationService"].full_name
RECIPIENT_SERVICE_NAME = recipient_svc.DESCRIPTOR.services_by_name["RecipientService"].full_name
CATEGORY_SERVICE_NAME = category_svc.DESCRIPTOR.services_by_name["CategoryService"].full_name
TEMPLATE_SERVICE_NAME = template_svc.DESCRIPTOR.services_by_name["TemplateService"].full_name
# notifyd's own services: listed by reflection and reported SERVING by health.
NOTIFYD_SERVICES = (
    SERVICE_NAME,
    RECIPIENT_SERVICE_NAME,
    CATEGORY_SERVICE_NAME,
    TEMPLATE_SERVICE_NAME,
)
# About 10 s of calls at this box's unary capacity. Each waiting call holds ~15 KB, so the
# queue stays within the API process' memory budget (300 MB) when it is full.
MAX_PENDING_CALLS = 5_000


class ApiServer:
    """Owns the server's life: bind, serve (health SERVING), drain on stop (NOT_SERVING)."""

    def __init__(
        self,
        servicer: NotificationServicer,
        authenticate: AuthenticateApiKey,
        listen: str,
        *,
        recipients: RecipientServicer,
        categories: CategoryServicer,
        templates: TemplateServicer,
        reuse_port: bool = False,
        observers: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        self._servicer = servicer
        self._server = grpc.aio.server(
            # Observers (traces, metrics, request ids) run outermost, so they see every call
            # with its final status, refused authentications included.
            interceptors=[*observers, AuthInterceptor(authenticate)],
            options=[
                # Off by default so a second server on a taken port fails loudly instead of
                # silently sharing it; on for several API processes behind one port.
                ("grpc.so_reuseport", 1 if reuse_port else 0),
                ("grpc.max_receive_message_length", 16 * 1024 * 1024),
                # Calls gRPC core holds until this process picks them up: above its default
                # of 1,000 it sheds them at random with CANCELLED, a code callers take as their
                # own doing and do not retry. Up to MAX_PENDING_CALLS now wait their turn,
                # bounded by each caller's deadline; core sheds only beyond that.
                ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
                ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS),
            ],
        )
        svc_grpc.add_NotificationServiceServicer_to_server(servicer, self._server)
        recipient_grpc.add_RecipientServiceServicer_to_server(recipients, self._server)
        category_grpc.add_CategoryServiceServicer_to_server(categories, self._server)
        template_grpc.add_TemplateServiceServicer_to_server(templates, self._server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            [*NOTIFYD_SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME],
            self._server,
        )
        self.port = self._server.add_insecure_port(listen)
        if self.port == 0:
            raise OSError(f"could not listen on {listen}")
        self.address = f"{listen.rsplit(':', 1)[0]}:{self.port}"

    async def start(self) -> None:
        await self._server.start()
        for name in ("", *NOTIFYD_SERVICES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("notifyd API listening on %s", self.address)

    async def wait(self) -> None:
        await self._server.wait_for_termination()

    async def stop(self, grace: float = 10.0) -> None:
        # Tell load balancers first, then let in-flight RPCs finish within the grace period.
        await self._health.enter_graceful_shutdown()
        # Open inbox streams would hold the whole grace period: end them now; clients resume
        # from their cursor on another instance.
        self._servicer.stop_streams()
        await self._server.stop(grace)
        # Bulk sends whose callers went away still run: they get the same grace.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._servicer.finish_detached(), grace)
