"""The Template aggregate: a named, versioned template and which version is used for sends."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from datetime import datetime

from domain.errors import NotFound, PreconditionFailed, ValidationFailed, Violations
from domain.template.content import TemplateVersionContent
from domain.template.validation import (
    check_default_locale,
    check_description,
    check_template_name,
    validated_content,
)


class VersionState(enum.StrEnum):
    DRAFT = "DRAFT"
    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"


@dataclass(frozen=True, slots=True)
class TemplateVersion:
    """One immutable version. Only its state changes, and only through the Template."""

    name: str
    version: int
    state: VersionState
    content: TemplateVersionContent
    created_at: datetime
    created_by: str


@dataclass
class Template:
    tenant_id: str
    name: str
    description: str
    default_locale: str
    active_version: int | None
    latest_version: int
    created_at: datetime
    updated_at: datetime
    # Compare-and-set token of the stored row; the repository moves it on save.
    row_version: int = 0
    _new_versions: dict[int, TemplateVersion] = field(default_factory=dict, repr=False)
    _state_changes: dict[int, VersionState] = field(default_factory=dict, repr=False)

    @classmethod
    def create(
        cls,
        *,
        tenant_id: str,
        name: str,
        description: str,
        default_locale: str,
        content: TemplateVersionContent,
        now: datetime,
        created_by: str,
    ) -> tuple[Template, TemplateVersion]:
        """Version 1, a draft. ValidationFailed names every bad field."""
        v = Violations()
        check_template_name(v, name)
        check_description(v, description)
        locale = check_default_locale(v, default_locale)
        checked = validated_content(v, content, locale)
        v.raise_if_any()
        template = cls(tenant_id, name, description, locale, None, 0, now, now)
        return template, template._append(checked, now, created_by)

    def add_version(
        self,
        content: TemplateVersionContent,
        now: datetime,
        created_by: str,
        *,
        description: str | None = None,
        default_locale: str | None = None,
    ) -> TemplateVersion:
        """The next version, a draft; older versions stay as they are. ``None`` keeps the
        current description or default locale."""
        v = Violations()
        if description is not None:
            check_description(v, description)
        locale = self.default_locale
        if default_locale is not None:
            locale = check_default_locale(v, default_locale)
        checked = validated_content(v, content, locale)
        v.raise_if_any()
        if description is not None:
            self.description = description
        self.default_locale = locale
        return self._append(checked, now, created_by)

    def activate(self, version: int, now: datetime) -> None:
        """Make ``version`` the one used for sends; the previously active one becomes
        INACTIVE. Activating the active version again changes nothing (retries are safe)."""
        if version <= 0:
            raise ValidationFailed.single("version", "must be 1 or more")
        if version > self.latest_version:
            raise NotFound("template version", f"{self.name} v{version}")
        if version == self.active_version:
            return
        if self.active_version is not None:
            self._set_state(self.active_version, VersionState.INACTIVE)
        self._set_state(version, VersionState.ACTIVE)
        self.active_version = version
        self.updated_at = now

    def deactivate(self, now: datetime) -> None:
        """Stop using the template for sends: its active version becomes INACTIVE."""
        if self.active_version is None:
            raise PreconditionFailed(
                f"template {self.name}", "has no active version", "TEMPLATE_INACTIVE"
            )
        self._set_state(self.active_version, VersionState.INACTIVE)
        self.active_version = None
        self.updated_at = now

    def state_of(self, version: TemplateVersion) -> VersionState:
        """The state of a loaded version as it stands after this aggregate's changes."""
        return self._state_changes.get(version.version, version.state)

    def pending_versions(self) -> list[TemplateVersion]:
        return [self._new_versions[n] for n in sorted(self._new_versions)]

    def pending_state_changes(self) -> dict[int, VersionState]:
        """State changes of versions stored before (new versions carry their own state)."""
        return {n: s for n, s in self._state_changes.items() if n not in self._new_versions}

    def new_version(self, version: int) -> TemplateVersion:
        return self._new_versions[version]

    def mark_saved(self) -> None:
        self._new_versions.clear()
        self._state_changes.clear()

    def _append(
        self, content: TemplateVersionContent, now: datetime, created_by: str
    ) -> TemplateVersion:
        self.latest_version += 1
        self.updated_at = now
        version = TemplateVersion(
            self.name, self.latest_version, VersionState.DRAFT, content, now, created_by
        )
        self._new_versions[version.version] = version
        return version

    def _set_state(self, version: int, state: VersionState) -> None:
        if version in self._new_versions:
            self._new_versions[version] = dataclasses.replace(
                self._new_versions[version], state=state
            )
        self._state_changes[version] = state
