"""Who is acting on the dashboard. Viewing is open (unless ``require_login_to_view``); actions
(acknowledge, silence, roll back, approve, annotate) need a signed-in responder: a local user
whose pbkdf2 password hash is in the settings, or an OIDC identity from ``st.login``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

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


def authenticate(settings: Settings, user: str, password: str) -> bool:
    """Check a local user's password against the settings."""
    entry = settings.dashboard.users.get(user)
    return entry is not None and verify_password(password, entry.password_hash)


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


def sign_in_box(settings: Settings) -> str | None:
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
                    if authenticate(settings, name, password):
                        st.session_state["lorawatch_user"] = name
                        st.rerun()
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
