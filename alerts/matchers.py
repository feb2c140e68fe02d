"""Label matchers in Alertmanager's syntax: ``name="value"``, ``name!="v"``, ``name=~"re"``,
``name!~"re"``. Regular expressions are anchored; a missing label matches the empty string."""

from __future__ import annotations

import re
from dataclasses import dataclass

from lorawatch.errors import InputError

_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|([^\s"]*))\s*$')


@dataclass(frozen=True)
class Matcher:
    """One label matcher."""

    name: str
    op: str
    value: str

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether ``labels`` satisfy this matcher."""
        actual = str(labels.get(self.name, ""))
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = re.fullmatch(self.value, actual) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


def parse_matcher(text: str) -> Matcher:
    """Parse one matcher; raises InputError naming the matcher and the syntax."""
    match = _MATCHER.match(text)
    if not match:
        raise InputError(
            f"matcher {text!r} is not valid", fix='write name="value", name!="value", name=~"regex" or name!~"regex"'
        )
    name, op, quoted, bare = match.groups()
    value = bytes(quoted, "utf-8").decode("unicode_escape") if quoted is not None else bare
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as exc:
            raise InputError(
                f"matcher {text!r} has an invalid regular expression: {exc}", fix="correct the regex"
            ) from None
    return Matcher(name, op, value)


def parse_matchers(items: list[str] | dict[str, str] | None) -> list[Matcher]:
    """A list of matcher strings, or a mapping of label to value (equality)."""
    if not items:
        return []
    if isinstance(items, dict):
        return [Matcher(str(k), "=", str(v)) for k, v in items.items()]
    return [parse_matcher(item) for item in items]


def matches_all(matchers: list[Matcher], labels: dict[str, str]) -> bool:
    """Whether every matcher matches."""
    return all(m.matches(labels) for m in matchers)
