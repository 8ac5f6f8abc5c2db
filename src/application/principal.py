"""Who is calling: the tenant and calling service an API key belongs to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    service: str
    key_id: str = ""
