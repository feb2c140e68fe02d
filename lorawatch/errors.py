"""The errors LoraWatch raises on purpose.

Every error a user can fix derives from ``LoraWatchError``; the CLI turns it into one line on
stderr and exit status 2, the dashboard into ``st.error``, the scheduler into a failed run.
Anything else that escapes is a bug (exit status 1, with a traceback).

    LoraWatchError
    ├── ConfigError (ValueError)       a settings file or value is wrong
    ├── InputError (ValueError)        a file or argument the user gave is wrong
    │   └── DatasetError               a canary dataset is malformed
    ├── NotFoundError (LookupError)    an adapter, version, alias, run ... does not exist
    ├── ConflictError                  it exists already, or the state forbids the action
    ├── IntegrityError                 a stored file no longer matches its recorded hash
    └── DependencyError (RuntimeError) an optional component is missing or unreachable

Each error carries ``what`` (the problem), an optional ``where`` (``file:line`` or the
object) and an optional ``fix``; ``str()`` joins them into one line.
"""

from __future__ import annotations

import difflib

from lorawatch.secrets import scrub


class LoraWatchError(Exception):
    """Base of every error a user can act on."""

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """The message on one line: ``where: what; fix``."""
        text = f"{self.where}: {self.what}" if self.where else self.what
        if self.fix:
            text = f"{text}; fix: {self.fix}"
        return scrub(" ".join(text.split("\n")))


class ConfigError(LoraWatchError, ValueError):
    """A settings file or value is invalid."""


class InputError(LoraWatchError, ValueError):
    """A file or argument given by the user is invalid."""


class DatasetError(InputError):
    """A canary dataset is malformed."""


class NotFoundError(LoraWatchError, LookupError):
    """The named object does not exist."""


class ConflictError(LoraWatchError):
    """The object exists already, or its state forbids the action."""


class IntegrityError(LoraWatchError):
    """A stored file does not match the hash recorded when it was registered."""


class DependencyError(LoraWatchError, RuntimeError):
    """An optional component is missing or cannot be reached."""


def did_you_mean(name: str, known: list[str], *, limit: int = 20) -> str:
    """``; did you mean X?`` (the closest known name) or ``; known: a, b, c`` for a message."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    prefixed = [k for k in known if name and k.lower().startswith(name.lower())]
    if close or len(prefixed) == 1:
        return f"; did you mean {(close or prefixed)[0]}?"
    shown = ", ".join(sorted(known)[:limit]) or "none"
    return f"; known: {shown}" + (" ..." if len(known) > limit else "")
