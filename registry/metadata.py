"""Version metadata: lineage, performance, risk profile and ownership.

Each section is optional but first-class: validated here, stored as its own column, shown by
``registry show`` and filterable in ``registry list``.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Lineage(_Section):
    """Where the version came from."""

    base_model_version: str | None = Field(None, description="Revision of the base it was trained on.")
    dataset_hash: str | None = Field(None, description="Hash of the training data set.")
    commit_sha: str | None = Field(None, description="Commit of the training code.")
    training_run: str | None = Field(None, description="Link to the training run.")


class Performance(_Section):
    """How well it did before release."""

    offline_metrics: dict[str, float] = Field(default_factory=dict, description="Metric name to value.")
    human_eval: str | None = Field(None, description="Summary of the human evaluation.")
    policy_checks: dict[str, Any] = Field(default_factory=dict, description="Check name to outcome.")


class RiskProfile(_Section):
    """What could go wrong with it."""

    bias_assessment: str | None = Field(None, description="Summary of the bias assessment.")
    safety_incidents: list[str] = Field(default_factory=list, description="Known safety incidents.")
    data_expires_on: date | None = Field(None, description="Date the training data goes stale.")
    domain_segments: list[str] = Field(
        default_factory=list,
        description="Canary segments the adapter is trained for: drift there is intended (reported, not alerted); "
        "drift on every other segment is what its drift monitors judge.",
    )


class Ownership(_Section):
    """Who answers for it."""

    team: str | None = Field(None, description="Responsible team.")
    contacts: list[str] = Field(default_factory=list, description="Escalation path, in order.")
    review_cadence_days: int | None = Field(None, gt=0, description="Days between reviews.")


class VersionMetadata(_Section):
    """All four sections of a version's metadata."""

    lineage: Lineage = Field(default_factory=Lineage)
    performance: Performance = Field(default_factory=Performance)
    risk: RiskProfile = Field(default_factory=RiskProfile)
    ownership: Ownership = Field(default_factory=Ownership)


def merge(base: VersionMetadata, overrides: dict[str, dict[str, Any]]) -> VersionMetadata:
    """``base`` with the non-empty values of ``overrides`` (from command-line options)."""
    data = base.model_dump()
    for section, values in overrides.items():
        for key, value in values.items():
            if value not in (None, [], {}, ()):
                data[section][key] = value
    return VersionMetadata.model_validate(data)
