"""notify.v1.CategoryService: decode, call one use case, encode. No rules live here."""

from __future__ import annotations

import grpc

from application.use_cases.categories import GetCategory, ListCategories, PutCategory
from interfaces.grpc import category_mappers as m
from interfaces.grpc.gen.notify.v1 import category_service_pb2 as pb
from interfaces.grpc.gen.notify.v1 import category_service_pb2_grpc as pb_grpc
from interfaces.grpc.interceptors import current_principal
from interfaces.grpc.notification_servicer import translate_errors


class CategoryServicer(pb_grpc.CategoryServiceServicer):
    def __init__(self, put: PutCategory, get: GetCategory, list_: ListCategories) -> None:
        self._put = put
        self._get = get
        self._list = list_

    @translate_errors
    async def PutCategory(
        self, request: pb.PutCategoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.PutCategoryResponse:
        stored = await self._put.execute(current_principal(), m.category_input(request.category))
        return pb.PutCategoryResponse(category=m.category_to_pb(stored))

    @translate_errors
    async def GetCategory(
        self, request: pb.GetCategoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCategoryResponse:
        found = await self._get.execute(current_principal(), request.name)
        return pb.GetCategoryResponse(category=m.category_to_pb(found))

    @translate_errors
    async def ListCategories(
        self, request: pb.ListCategoriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCategoriesResponse:
        page, token = await self._list.execute(
            current_principal(), request.page_size, request.page_token
        )
        return pb.ListCategoriesResponse(
            categories=[m.category_to_pb(c) for c in page], next_page_token=token
        )
