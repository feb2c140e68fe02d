"""Who is acting on the dashboard. Viewing is open (unless ``require_login_to_view``); actions
(acknowledge, silence, roll back, approve, annotate) need a signed-in responder: a local user
whose pbkdf2 password hash is in the settings, or an OIDC identity from ``st.login``.

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
from datetime import datetime

from sqlalchemy import func, select

from lorawatch import audit
from lorawatch.db import Database
from lorawatch.db.models import AuditLog
from lorawatch.db.types import utcnow
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


def authenticate(settings: Settings, user: str, password: str) -> bool:
    """Check a local user's password against the settings (the same work for unknown users)."""
    entry = settings.dashboard.users.get(user)
    encoded = entry.password_hash if entry is not None else _DECOY
    matched = verify_password(password, encoded)
    return entry is not None and matched


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
        if settings.dashboard.users:
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
    return None


def require_responder(action: str) -> str | None:
    """The signed-in user, or None after telling an anonymous viewer that ``action`` needs sign-in."""
    # Deferred: streamlit is only needed inside the dashboard; the CLI uses this module without it.
    import streamlit as st

    user = current_user()
    if user is None:
        st.info(f"Sign in (sidebar) to {action}.")
    return user
