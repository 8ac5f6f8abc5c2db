"""notify.v1.TemplateService: decode, call one use case, encode. No rules live here."""

from __future__ import annotations

import grpc

from application.use_cases.templates import (
    ActivateTemplateVersion,
    CreateTemplate,
    DeactivateTemplate,
    GetTemplate,
    ListTemplates,
    RenderTemplate,
    UpdateTemplate,
)
from interfaces.grpc import template_mappers as m
from interfaces.grpc.gen.notify.v1 import template_service_pb2 as tpb
from interfaces.grpc.gen.notify.v1 import template_service_pb2_grpc as tpb_grpc
from interfaces.grpc.interceptors import current_principal
from interfaces.grpc.notification_servicer import translate_errors


class TemplateServicer(tpb_grpc.TemplateServiceServicer):
    def __init__(
        self,
        create: CreateTemplate,
        update: UpdateTemplate,
        get: GetTemplate,
        list_templates: ListTemplates,
        activate: ActivateTemplateVersion,
        deactivate: DeactivateTemplate,
        render: RenderTemplate,
    ) -> None:
        self._create = create
        self._update = update
        self._get = get
        self._list = list_templates
        self._activate = activate
        self._deactivate = deactivate
        self._render = render

    @translate_errors
    async def CreateTemplate(
        self, request: tpb.CreateTemplateRequest, context: grpc.aio.ServicerContext
    ) -> tpb.CreateTemplateResponse:
        stored = await self._create.execute(current_principal(), m.draft(request))
        return tpb.CreateTemplateResponse(
            template=m.template_to_pb(stored.template),
            version=m.version_to_pb(stored.template, stored.version),
        )

    @translate_errors
    async def UpdateTemplate(
        self, request: tpb.UpdateTemplateRequest, context: grpc.aio.ServicerContext
    ) -> tpb.UpdateTemplateResponse:
        stored = await self._update.execute(current_principal(), m.draft(request))
        return tpb.UpdateTemplateResponse(
            template=m.template_to_pb(stored.template),
            version=m.version_to_pb(stored.template, stored.version),
        )

    @translate_errors
    async def GetTemplate(
        self, request: tpb.GetTemplateRequest, context: grpc.aio.ServicerContext
    ) -> tpb.GetTemplateResponse:
        found = await self._get.execute(current_principal(), request.name, request.version)
        return tpb.GetTemplateResponse(
            template=m.template_to_pb(found.template),
            version=m.version_to_pb(found.template, found.version),
        )

    @translate_errors
    async def ListTemplates(
        self, request: tpb.ListTemplatesRequest, context: grpc.aio.ServicerContext
    ) -> tpb.ListTemplatesResponse:
        page, token = await self._list.execute(
            current_principal(), request.page_size, request.page_token
        )
        return tpb.ListTemplatesResponse(
            templates=[m.template_to_pb(t) for t in page], next_page_token=token
        )

    @translate_errors
    async def ActivateTemplateVersion(
        self, request: tpb.ActivateTemplateVersionRequest, context: grpc.aio.ServicerContext
    ) -> tpb.ActivateTemplateVersionResponse:
        template = await self._activate.execute(current_principal(), request.name, request.version)
        return tpb.ActivateTemplateVersionResponse(template=m.template_to_pb(template))

    @translate_errors
    async def DeactivateTemplate(
        self, request: tpb.DeactivateTemplateRequest, context: grpc.aio.ServicerContext
    ) -> tpb.DeactivateTemplateResponse:
        template = await self._deactivate.execute(current_principal(), request.name)
        return tpb.DeactivateTemplateResponse(template=m.template_to_pb(template))

    @translate_errors
    async def RenderTemplate(
        self, request: tpb.RenderTemplateRequest, context: grpc.aio.ServicerContext
    ) -> tpb.RenderTemplateResponse:
        rendered = await self._render.execute(current_principal(), m.render_request(request))
        return m.render_response(rendered)
