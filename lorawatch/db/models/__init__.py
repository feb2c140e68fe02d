"""The tables, one module per concept. Every schema change here comes with an Alembic
migration in ``lorawatch/migrations/versions``; ``tests/test_db.py`` checks that they agree."""

from __future__ import annotations

from lorawatch.db.models.access import ApiToken
from lorawatch.db.models.alerts import Alert, AlertEvent, DeliveryAttempt, Notification, NotificationGroup, Silence
from lorawatch.db.models.base import AuditLog, Base
from lorawatch.db.models.canary import (
    CanaryBaseline,
    CanaryBaseOutput,
    CanaryDatasetRecord,
    CanaryResult,
    CanaryRun,
    GateVerdict,
    MonitorResult,
    RiskAnnotation,
)
from lorawatch.db.models.incidents import ActionItem, Incident, IncidentAlert, IncidentApproval, IncidentEvent
from lorawatch.db.models.jobs import JobLease, JobRun
from lorawatch.db.models.registry import (
    AdapterAlias,
    AdapterRecord,
    AdapterVersion,
    AliasEvent,
    BaseModelRecord,
)
from lorawatch.db.models.traffic import IngestedFile, KpiValue, TrafficHour, TrafficMinute

__all__ = [
    "ActionItem",
    "ApiToken",
    "Alert",
    "AlertEvent",
    "DeliveryAttempt",
    "Notification",
    "NotificationGroup",
    "Silence",
    "AdapterAlias",
    "AdapterRecord",
    "AdapterVersion",
    "AliasEvent",
    "AuditLog",
    "Base",
    "BaseModelRecord",
    "CanaryBaseOutput",
    "CanaryBaseline",
    "CanaryDatasetRecord",
    "CanaryResult",
    "CanaryRun",
    "GateVerdict",
    "Incident",
    "IncidentAlert",
    "IncidentApproval",
    "IncidentEvent",
    "IngestedFile",
    "JobLease",
    "JobRun",
    "KpiValue",
    "MonitorResult",
    "RiskAnnotation",
    "TrafficHour",
    "TrafficMinute",
]
