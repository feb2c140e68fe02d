"""Registry tables: base models, adapters, immutable versions, aliases and their history."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lorawatch.db.models.base import Base
from lorawatch.db.types import utcnow


class BaseModelRecord(Base):
    """A base LLM that adapters are trained on."""

    __tablename__ = "base_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    path: Mapped[str | None] = mapped_column(Text)
    hub_id: Mapped[str | None] = mapped_column(String(400))
    revision: Mapped[str | None] = mapped_column(String(200))
    architecture: Mapped[str | None] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    files: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))


class AdapterRecord(Base):
    """A named LoRA adapter; its content lives in immutable versions."""

    __tablename__ = "adapters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_models.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))

    base_model: Mapped[BaseModelRecord] = relationship(lazy="joined")
    versions: Mapped[list[AdapterVersion]] = relationship(back_populates="adapter", order_by="AdapterVersion.id")


class AdapterVersion(Base):
    """One immutable version of an adapter: its files, hashes, config and metadata."""

    __tablename__ = "adapter_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"))
    version: Mapped[str] = mapped_column(String(128))
    # from adapter_config.json
    peft_type: Mapped[str] = mapped_column(String(50))
    rank: Mapped[int] = mapped_column(Integer)
    alpha: Mapped[float]
    target_modules: Mapped[list[str]] = mapped_column(JSON)
    base_model_name_or_path: Mapped[str | None] = mapped_column(Text)
    # content
    files: Mapped[dict[str, Any]] = mapped_column(JSON)
    content_sha256: Mapped[str] = mapped_column(String(64))
    storage: Mapped[str] = mapped_column(String(20))
    path: Mapped[str] = mapped_column(Text)
    allow_pickle: Mapped[bool] = mapped_column(default=False)
    state: Mapped[str] = mapped_column(String(20), default="active")
    archive_path: Mapped[str | None] = mapped_column(Text)
    archived_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))
    # metadata, first-class: the JSON holds the section, the columns serve filters
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    performance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    risk: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ownership: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    owner_team: Mapped[str | None] = mapped_column(String(200))
    data_expires_on: Mapped[date | None] = mapped_column(Date)
    review_cadence_days: Mapped[int | None] = mapped_column(Integer)
    last_reviewed_at: Mapped[datetime | None]

    adapter: Mapped[AdapterRecord] = relationship(back_populates="versions", lazy="joined")

    __table_args__ = (
        UniqueConstraint("adapter_id", "version"),
        Index("ix_adapter_versions_owner_team", "owner_team"),
    )


class AdapterAlias(Base):
    """Where an alias (production, canary, shadow, ...) of an adapter points, per tenant.

    ``tenant`` is the empty string for the route's default, which every tenant without an
    alias of its own follows.
    """

    __tablename__ = "adapter_aliases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"))
    alias: Mapped[str] = mapped_column(String(100))
    tenant: Mapped[str] = mapped_column(String(200), default="")
    version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("adapter_id", "alias", "tenant"),)


class AliasEvent(Base):
    """One change of an alias: a promotion or a rollback, with actor, time and reason."""

    __tablename__ = "alias_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"))
    alias: Mapped[str] = mapped_column(String(100))
    tenant: Mapped[str] = mapped_column(String(200), default="")
    action: Mapped[str] = mapped_column(String(20))
    from_version_id: Mapped[int | None] = mapped_column(ForeignKey("adapter_versions.id"))
    to_version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id"))
    ts: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_alias_events_lookup", "adapter_id", "alias", "tenant", "ts"),)
