"""Alert rules: loaded from YAML (the built-ins in ``alerts/rules/`` and the user's files named
in ``[alerts] rules_files``), validated, and rendered.

A rules file holds groups of rules, as Prometheus' do::

    groups:
      - name: drift
        rules:
          - id: logit_drift              # also the alert's name and the runbook's file name
            monitor: logit_kl            # a monitor's results (or metric: one of METRICS)
            selector: ['segment=""']     # label matchers on the series
            condition: breached          # or an operator and a threshold: "> 1.5"
            for: 0s
            keep_firing_for: 0s
            severity: warning            # critical, warning or info
            labels: {category: drift}
            annotations:
              summary: "{{ labels.adapter }}: KL {{ value | round(3) }}"
            runbook_url: https://...     # default: runbooks/<id>.md, linked from the dashboard

A bad file fails with ``file:line``, the rule's id and the fix.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lorawatch.alerts.matchers import Matcher, parse_matchers
from lorawatch.durations import Duration, format_duration
from lorawatch.errors import ConfigError, InputError
from lorawatch.inputs import NESTED_TOO_DEEPLY
from lorawatch.monitors.registry import all_monitors
from lorawatch.settings import Settings

BUILTIN_RULES_DIR = Path(__file__).parent / "rules"
RUNBOOKS_DIR = Path(__file__).parent.parent / "runbooks"  # lorawatch/runbooks: the runbooks/ folder

# Series LoraWatch derives from its own tables (besides monitor results).
METRICS = {
    "canary_job_failed": "1 when the latest canary run of an adapter on a dataset failed or stopped (stale heartbeat), else 0",
    "canary_job_age_hours": "hours since the last complete canary run of each served adapter",
    "notifications_failed": "notifications per receiver that failed for good within the lookback, not sent again",
    "adapter_data_expires_in_days": "days until a served version's training data must no longer be used",
    "adapter_review_overdue_days": "days a served version's review is overdue (negative: days left)",
}

OPERATORS = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_CONDITION = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*(-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_ID = re.compile(r"^[a-z][a-z0-9_]*$")


class RuleSpec(BaseModel):
    """One rule as written in YAML."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str
    monitor: str | None = None
    metric: str | None = None
    selector: list[str] | dict[str, str] = Field(default_factory=list)
    condition: str = "breached"
    for_: Duration = Field(timedelta(0), alias="for")
    keep_firing_for: Duration = timedelta(0)
    severity: Literal["critical", "warning", "info"] = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    runbook_url: str | None = None
    lookback: Duration = timedelta(days=8)
    versions: Literal["served", "all"] = "served"

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError("must be lower case letters, digits and underscores, starting with a letter")
        return value

    @field_validator("condition")
    @classmethod
    def _condition(cls, value: str) -> str:
        if value != "breached" and not _CONDITION.match(value):
            raise ValueError('must be "breached" or an operator and a number, e.g. "> 1.5"')
        return value

    @model_validator(mode="after")
    def _source(self) -> RuleSpec:
        if (self.monitor is None) == (self.metric is None):
            raise ValueError("give exactly one of monitor or metric")
        if self.metric is not None:
            if self.metric not in METRICS:
                raise ValueError(f"unknown metric {self.metric!r}; known: {', '.join(sorted(METRICS))}")
            if self.condition == "breached":
                raise ValueError('a metric has no breached flag: give a condition such as "> 0"')
        else:
            known = {m.id for m in all_monitors()}
            if self.monitor not in known:
                raise ValueError(f"unknown monitor {self.monitor!r}; known: {', '.join(sorted(known))}")
        for key in ("alertname", "severity"):
            if key in self.labels:
                raise ValueError(f"label {key!r} is set by LoraWatch; remove it from labels")
        return self


@dataclass
class Rule:
    """A validated rule, ready to evaluate."""

    id: str
    monitor: str | None
    metric: str | None
    selector: list[Matcher]
    op: str | None
    threshold: float | None
    for_: timedelta
    keep_firing_for: timedelta
    severity: str
    labels: dict[str, str]
    annotations: dict[str, str]
    runbook_url: str | None
    lookback: timedelta
    versions: str
    source: str
    line: int | None = None
    templates: dict[str, Any] = field(default_factory=dict, repr=False)

    def holds(self, value: float | None, breached: bool) -> bool:
        """Whether the condition holds for one sample."""
        if self.op is None:
            return bool(breached)
        return value is not None and OPERATORS[self.op](value, self.threshold)

    def render_annotations(self, context: dict[str, Any]) -> dict[str, str]:
        """The annotations with their templates filled from ``labels``, ``value``, ``threshold``, ``context``."""
        return {key: " ".join(template.render(**context).split()) for key, template in self.templates.items()}

    def describe(self) -> dict[str, Any]:
        """A plain summary for listings and ``--json``."""
        return {
            "id": self.id,
            "source": f"monitor:{self.monitor}" if self.monitor else f"metric:{self.metric}",
            "condition": "breached" if self.op is None else f"{self.op} {self.threshold:g}",
            "selector": [str(m) for m in self.selector],
            "for": format_duration(self.for_),
            "keep_firing_for": format_duration(self.keep_firing_for),
            "severity": self.severity,
            "labels": self.labels,
            "runbook": self.runbook_url,
            "file": f"{self.source}:{self.line}" if self.line else self.source,
        }


def _template_env(strict: bool = False) -> SandboxedEnvironment:
    env = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined if strict else Undefined)
    env.filters["pct"] = lambda v: f"{float(v) * 100:.1f}%"
    env.filters["pvalue"] = format_p_value
    return env


def format_p_value(value) -> str:
    """A p-value as people read one: "p = 0.012", and "p < 0.0001" where rounding would print 0 or
    a float's noise ("p=0.0", "1.8e-23")."""
    p = float(value)
    return "p < 0.0001" if p < 0.0001 else f"p = {p:.2g}"


def _compile(spec: RuleSpec, source: str, line: int | None, runbook_base: str | None, dashboard_url: str) -> Rule:
    env = _template_env()
    templates = {}
    for key, text in spec.annotations.items():
        try:
            templates[key] = env.from_string(text)
        except TemplateSyntaxError as exc:
            raise ConfigError(
                f"rule {spec.id}: annotation {key!r} is not a valid template: {exc.message}",
                where=f"{source}:{line}" if line else source,
                fix="use {{ labels.adapter }}, {{ value }}, {{ threshold }}, {{ context.version }}",
            ) from None
    op = threshold = None
    if spec.condition != "breached":
        match = _CONDITION.match(spec.condition)
        op, threshold = match.group(1), float(match.group(2))
    return Rule(
        id=spec.id,
        monitor=spec.monitor,
        metric=spec.metric,
        selector=parse_matchers(spec.selector),
        op=op,
        threshold=threshold,
        for_=spec.for_,
        keep_firing_for=spec.keep_firing_for,
        severity=spec.severity,
        labels=dict(spec.labels),
        annotations=dict(spec.annotations),
        runbook_url=spec.runbook_url or runbook_url(spec.id, runbook_base, dashboard_url),
        lookback=spec.lookback,
        versions=spec.versions,
        source=source,
        line=line,
        templates=templates,
    )


def runbook_url(rule_id: str, base: str | None, dashboard_url: str = "http://127.0.0.1:8501") -> str:
    """Where a rule's runbook is read: under ``runbook_base_url``, else on the dashboard's Alerts page."""
    if base:
        return f"{base.rstrip('/')}/{rule_id}.md"
    return f"{dashboard_url.rstrip('/')}/alerts?runbook={rule_id}"


def runbook_path(rule_id: str) -> Path:
    """The Markdown runbook shipped for a rule."""
    return RUNBOOKS_DIR / f"{rule_id}.md"


def load_file(
    path: Path, *, runbook_base: str | None = None, dashboard_url: str = "http://127.0.0.1:8501", strict: bool = False
) -> list[Rule]:
    """Load and validate one rules file. ``strict`` (``alerts rules --check``) also renders every
    annotation against a sample series and rejects what cannot render."""

    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "rules file does not exist", where=where, fix="correct the path in [alerts] rules_files"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError("rules file is not UTF-8 text", where=where, fix="save it as UTF-8") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(NESTED_TOO_DEEPLY, where=where, fix="write the rules file as the documented groups") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(
            f"invalid YAML: {getattr(exc, 'problem', exc)}", where=f"{where}{line}", fix="correct the YAML syntax"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("groups"), list):
        raise ConfigError(
            'a rules file is a mapping with a "groups" list',
            where=f"{where}:1",
            fix="start the file with groups: and a list of {name, rules}",
        )
    rules: list[Rule] = []
    seen: dict[str, int | None] = {}
    for g_index, group in enumerate(data["groups"]):
        g_node = _item(_value(root, "groups"), g_index)
        if not isinstance(group, dict) or not isinstance(group.get("rules"), list):
            raise ConfigError(
                'a group needs "name" and a "rules" list',
                where=f"{where}:{_line(g_node)}",
                fix="write - name: ... and rules: [...]",
            )
        for r_index, raw in enumerate(group["rules"]):
            node = _item(_value(g_node, "rules"), r_index)
            line = _line(node)
            rule_id = raw.get("id", "?") if isinstance(raw, dict) else "?"
            if not isinstance(raw, dict):
                raise ConfigError(
                    "a rule is a mapping", where=f"{where}:{line}", fix="write id:, monitor: ... under - "
                )
            try:
                spec = RuleSpec.model_validate(raw)
            except ValidationError as exc:
                err = exc.errors()[0]
                key = str(err["loc"][0]) if err["loc"] else None
                if key is None:  # a rule-level check: point at the key it is about
                    key = next(
                        (
                            k
                            for k, word in (
                                ("monitor", "unknown monitor"),
                                ("metric", "unknown metric"),
                                ("labels", "label "),
                            )
                            if word in err["msg"]
                        ),
                        None,
                    )
                key_line = _line(_value(node, "for" if key == "for_" else key)) if key else None
                message = err["msg"].removeprefix("Value error, ")
                if err["type"] == "extra_forbidden":
                    message = f"unknown key {key!r}; known: {', '.join(sorted(f.alias or n for n, f in RuleSpec.model_fields.items()))}"
                elif err["type"] == "missing":
                    message = f"missing key {key!r}"
                raise ConfigError(
                    f"rule {rule_id}: {message}"
                    + (f" (key {key!r})" if err["loc"] and err["type"] not in ("extra_forbidden", "missing") else ""),
                    where=f"{where}:{key_line or line}",
                    fix="see the rules format in alerts/rules.py or the README",
                ) from None
            except InputError as exc:
                raise ConfigError(f"rule {rule_id}: {exc.what}", where=f"{where}:{line}", fix=exc.fix) from None
            if spec.id in seen:
                raise ConfigError(
                    f"rule {spec.id} is defined twice (first at line {seen[spec.id]})",
                    where=f"{where}:{line}",
                    fix="give each rule its own id",
                )
            seen[spec.id] = line
            try:
                rules.append(_compile(spec, where, line, runbook_base, dashboard_url))
            except InputError as exc:
                raise ConfigError(f"rule {spec.id}: {exc.what}", where=f"{where}:{line}", fix=exc.fix) from None
            if strict:
                key_line = _line(_value(node, "annotations")) or line
                check_templates(spec, where=f"{where}:{key_line}")
    return rules


class _SampleNumber(float):
    """A number standing in for any value a series may carry (it has no attributes of its own)."""


class _SampleMapping(dict):
    """A mapping in which any key reads as a sample: ``leaf`` for plain keys, ``nested`` for
    the keys that hold mappings themselves (``context.details``)."""

    def __init__(self, leaf: Any, nested: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.leaf, self.nested = leaf, nested or {}

    def __missing__(self, key: str) -> Any:
        if key in self.nested:
            return self.nested[key]
        return self.leaf if not callable(self.leaf) else self.leaf(key)


def sample_context() -> dict[str, Any]:
    """What a template sees for a typical series: any label (text), ``value``, ``threshold``,
    and any ``context`` key (a number) with ``context.details`` one mapping deeper."""
    number = _SampleNumber(0.5)
    return {
        "labels": _SampleMapping(lambda key: f"sample-{key}"),
        "value": 1.5,
        "threshold": 1.0,
        "context": _SampleMapping(number, {"details": _SampleMapping(number)}),
    }


def check_templates(spec: RuleSpec, *, where: str) -> None:
    """Render each annotation against ``sample_context()`` with strict undefined values; raise
    ConfigError naming the rule and the annotation when one cannot render."""
    env = _template_env(strict=True)
    for key, text in spec.annotations.items():
        try:
            env.from_string(text).render(**sample_context())
        except Exception as exc:
            raise ConfigError(
                f"rule {spec.id}: annotation {key!r} cannot render: {type(exc).__name__}: {exc}",
                where=where,
                fix="use {{ labels.adapter }}, {{ value }}, {{ threshold }}, {{ context.run }}, "
                "{{ context.details.<key> }}; guard divisions and optional fields",
            ) from None


def _value(node, key: str | None):
    if node is None or key is None or not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if getattr(k, "value", None) == key:
            return v
    return None


def _item(node, index: int):
    if isinstance(node, yaml.SequenceNode) and index < len(node.value):
        return node.value[index]
    return None


def _line(node) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def builtin_files() -> list[Path]:
    """The rule files shipped with LoraWatch."""
    return sorted(BUILTIN_RULES_DIR.glob("*.yaml"))


def load_rules(settings: Settings, *, include_disabled: bool = False) -> list[Rule]:
    """The rules in force: built-ins, then the user's files (replacing built-ins by id), minus disabled ones."""
    base_url = settings.alerts.runbook_base_url
    by_id: dict[str, Rule] = {}
    for path in builtin_files():
        for rule in load_file(path, runbook_base=base_url, dashboard_url=settings.alerts.dashboard_url):
            by_id[rule.id] = rule
    user_seen: dict[str, str] = {}
    for name in settings.alerts.rules_files:
        path = Path(name).expanduser()
        if not path.is_absolute() and settings.source is not None:
            path = settings.source.parent / path
        for rule in load_file(path, runbook_base=base_url, dashboard_url=settings.alerts.dashboard_url):
            if rule.id in user_seen:
                raise ConfigError(
                    f"rule {rule.id} is defined twice (also in {user_seen[rule.id]})",
                    where=f"{rule.source}:{rule.line}",
                    fix="give each rule its own id",
                )
            user_seen[rule.id] = f"{rule.source}:{rule.line}"
            by_id[rule.id] = rule
    unknown = [r for r in settings.alerts.disabled_rules if r not in by_id]
    if unknown:
        raise ConfigError(
            f"disabled_rules names unknown rule {unknown[0]!r}",
            where="[alerts] disabled_rules",
            fix=f"use one of: {', '.join(sorted(by_id))}",
        )
    if include_disabled:
        return list(by_id.values())
    return [r for r in by_id.values() if r.id not in settings.alerts.disabled_rules]
