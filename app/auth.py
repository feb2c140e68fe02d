"""Who is acting on the dashboard. Viewing is open (unless ``require_login_to_view``); actions
(acknowledge, silence, roll back, approve, annotate) need a signed-in responder: a local user
whose pbkdf2 password hash is in the settings or in ``$LORAWATCH_HOME/dashboard-users.toml``
(written by ``lorawatch dashboard --add-user``, and by the demo for its ``oncall`` user), or an
OIDC identity from ``st.login``.

Sign-in resists guessing: an unknown user name costs the same pbkdf2 work as a known one (the
answer time does not tell which names exist), every failure is audited, and a name with
``lockout_failures`` failures within ``lockout_window`` is refused for that long, right
password or not (counted in the database, so every dashboard process agrees).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import tomllib
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select

from lorawatch import audit
from lorawatch.db import Database
from lorawatch.db.models import AuditLog
from lorawatch.db.types import utcnow
from lorawatch.errors import ConfigError, InputError
from lorawatch.privacy import private_file
from lorawatch.settings import Settings

ITERATIONS = 600_000


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """``pbkdf2_sha256$iterations$salt$hash`` (base64), for ``[dashboard.users.NAME] password_hash``."""
    salt = salt or os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded`` (constant-time comparison)."""
    try:
        scheme, iterations, salt, digest = encoded.split("$")
    except ValueError:
        return False
    if scheme != "pbkdf2_sha256":
        return False
    candidate = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    return hmac.compare_digest(candidate, base64.b64decode(digest))


# A hash of nothing anyone knows, checked for unknown users so that they cost the same work.
_DECOY = hash_password(base64.b64encode(os.urandom(24)).decode())


USERS_FILE = "dashboard-users.toml"
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")


def users_file(settings: Settings) -> Path:
    return settings.home_dir / USERS_FILE


def local_users(settings: Settings) -> dict[str, str]:
    """Local responders and their password hashes: the users file's, then the settings' (which
    win on a shared name)."""
    users = _file_users(users_file(settings))
    users.update({name: entry.password_hash for name, entry in settings.dashboard.users.items()})
    return users


def _file_users(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"cannot read the dashboard's users: {exc}",
            where=str(path),
            fix="remove the file and add the users again with `lorawatch dashboard --add-user NAME`",
        ) from None
    return {
        name: entry["password_hash"]
        for name, entry in (data.get("users") or {}).items()
        if isinstance(entry, dict) and isinstance(entry.get("password_hash"), str)
    }


def add_user(settings: Settings, name: str, password: str) -> Path:
    """Add or replace a local responder in the users file (its hash only; the file is private
    and replaced whole, so a crash leaves the old one)."""
    if not _USER_NAME.match(name or ""):
        raise InputError(
            f"user name {name!r} is not valid", fix="use letters, digits, '.', '_', '-' or '@' (100 at most)"
        )
    if len(password or "") < 8:
        raise InputError("the password is shorter than 8 characters", fix="choose a longer one")
    path = users_file(settings)
    users = _file_users(path)
    users[name] = hash_password(password)
    text = "# LoraWatch dashboard responders: `lorawatch dashboard --add-user NAME`. Hashes only.\n"
    text += "".join(f'\n[users."{n}"]\npassword_hash = "{h}"\n' for n, h in sorted(users.items()))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(text.encode())
        handle.flush()
        os.fsync(handle.fileno())
    private_file(tmp)
    os.replace(tmp, path)
    return path


def new_password() -> str:
    return secrets.token_urlsafe(12)


def authenticate(settings: Settings, user: str, password: str) -> bool:
    """Check a local user's password (the same work for unknown users)."""
    encoded = local_users(settings).get(user)
    matched = verify_password(password, encoded or _DECOY)
    return encoded is not None and matched


def sign_in(db: Database, settings: Settings, user: str, password: str, *, now: datetime | None = None) -> str:
    """``ok``, ``wrong`` or ``locked``; every failure and success is audited."""
    now = now or utcnow()
    window = settings.dashboard.lockout_window
    name = (user or "")[:200]
    with db.session() as session:
        failures = session.scalar(
            select(func.count())
            .select_from(AuditLog)
            .where(
                AuditLog.action == "dashboard.sign_in_failed",
                AuditLog.object_id == name,
                AuditLog.ts > now - window,
            )
        )
    if (failures or 0) >= settings.dashboard.lockout_failures:
        outcome = "locked"
        authenticate(settings, user, password)  # the same work: a lockout is not told apart by timing
    else:
        outcome = "ok" if authenticate(settings, user, password) else "wrong"
    with db.session() as session:
        audit.record(
            session,
            actor=name or "-",
            action="dashboard.sign_in" if outcome == "ok" else "dashboard.sign_in_failed",
            object_type="dashboard_user",
            object_id=name,
            details={"outcome": outcome},
            ts=now,
        )
    return outcome


def current_user() -> str | None:
    """The signed-in responder of this browser session, if any."""
    # Deferred: streamlit is only needed inside the dashboard; the CLI uses this module without it.
    import streamlit as st

    if st.session_state.get("lorawatch_user"):
        return st.session_state["lorawatch_user"]
    try:
        if getattr(st.user, "is_logged_in", False):
            return st.user.get("email") or st.user.get("name")
    except Exception:  # noqa: BLE001 - st.user needs auth configured; without it nobody is signed in
        return None
    return None


def sign_in_box(settings: Settings, db: Database) -> str | None:
    """The sidebar's sign-in (local users, or SSO when configured); returns the user."""
    # Deferred: streamlit is only needed inside the dashboard; the CLI uses this module without it.
    import streamlit as st

    user = current_user()
    with st.sidebar:
        if user:
            st.caption(f"Signed in as **{user}**")
            if st.button("Sign out", key="lw_sign_out"):
                if st.session_state.get("lorawatch_user"):
                    st.session_state.pop("lorawatch_user", None)
                else:
                    st.logout()
                st.rerun()
            return user
        st.caption("Viewing. Sign in to act (acknowledge, silence, roll back).")
        if settings.dashboard.oidc and st.button("Sign in with SSO", key="lw_sso"):
            st.login()
        if local_users(settings):
            with st.form("lw_sign_in", clear_on_submit=True):
                name = st.text_input("User", key="lw_user")
                password = st.text_input("Password", type="password", key="lw_password")
                if st.form_submit_button("Sign in"):
                    outcome = sign_in(db, settings, name, password)
                    if outcome == "ok":
                        st.session_state["lorawatch_user"] = name
                        st.rerun()
                    elif outcome == "locked":
                        st.error("Too many failed sign-ins for this user; try again later.")
                    else:
                        st.error("Unknown user or wrong password.")
        elif not settings.dashboard.oidc:
            st.caption(
                "No responder is set up yet. Add one with `lorawatch dashboard --add-user NAME` "
                "(`lorawatch demo` makes `oncall` and prints its password), or configure "
                "`[dashboard.users]` or SSO; see docs/dashboard.md."
            )
    return None


def require_responder(action: str) -> str | None:
    """The signed-in user, or None after telling an anonymous viewer that ``action`` needs sign-in."""
    # Deferred: streamlit is only needed inside the dashboard; the CLI uses this module without it.
    import streamlit as st

    user = current_user()
    if user is None:
        st.info(f"Sign in (sidebar) to {action}.")
    return user
