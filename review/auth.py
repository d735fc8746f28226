"""Who is using the dashboard: OIDC through ``st.login`` when configured, else local accounts.

Nothing but the login form is shown before a login. The login puts the user's name and role
in the browser session; the role only decides which buttons are shown. Every action is
checked again by the storage function that executes it, against the account as it is in the
database at that moment (``storage.users.require_role``), so a stale or forged session gets a
refusal, not a write.

OIDC: an ``[auth]`` section in ``.streamlit/secrets.toml`` (see the README). The account is
the identity's e-mail (else its ``sub``), created as an operator on the first login; an admin
gives it another role with ``agpt user add NAME --role ...`` beforehand.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from review import data
from storage import repositories as repo

SESSION_KEY = "agpt_user"


@dataclass(frozen=True)
class CurrentUser:
    """The logged-in user as the session knows them."""

    name: str
    role: str
    oidc: bool = False

    def may(self, role: str) -> bool:
        """True when this user's role is ``role`` or above (for showing buttons only)."""
        return repo.role_at_least(self.role, role)


def oidc_configured() -> bool:
    """True when ``st.secrets`` has an ``[auth]`` section (``st.login`` is then used)."""
    try:
        return "auth" in st.secrets
    except FileNotFoundError:  # no secrets.toml at all
        return False


def current_user() -> CurrentUser | None:
    """The logged-in user of this browser session, or None."""
    found = st.session_state.get(SESSION_KEY)
    if isinstance(found, dict) and found.get("name") and found.get("role"):
        return CurrentUser(str(found["name"]), str(found["role"]), bool(found.get("oidc")))
    return None


def _remember(user: repo.UserView, *, oidc: bool) -> None:
    st.session_state[SESSION_KEY] = {"name": user.name, "role": user.role, "oidc": oidc}


def login_page() -> None:
    """The only page shown before a login: OIDC button or the local accounts form."""
    st.title("AnomalyGPT review")
    if oidc_configured():
        _oidc_login()
    else:
        _local_login()


def _local_login() -> None:
    with st.form("login", enter_to_submit=True):
        st.subheader("Log in")
        name = st.text_input("User name", key="login_name", autocomplete="username")
        password = st.text_input("Password", type="password", key="login_password",
                                 autocomplete="current-password")
        submitted = st.form_submit_button("Log in", type="primary")
    if not submitted:
        st.caption("Accounts are managed with `agpt user add NAME --role ROLE`.")
        return
    with data.writing() as session:  # authenticate may upgrade the stored hash
        user = repo.authenticate(session=session, name=name.strip(), password=password)
    if user is None:
        st.error("Wrong user name or password, or the account is disabled.")
        return
    _remember(user, oidc=False)
    st.rerun()


def _oidc_login() -> None:
    if not st.user.is_logged_in:
        st.subheader("Log in")
        if st.button("Log in with single sign-on", type="primary"):
            st.login()
        return
    claims = st.user.to_dict()
    name = str(claims.get("email") or claims.get("sub") or "").strip()
    if not name:
        st.error("The identity provider sent neither an e-mail nor a subject.")
        _logout_button()
        return
    with data.writing() as session:
        user = repo.ensure_external_user(session=session, name=name)
    if user.disabled:
        st.error(f"The account {name} is disabled; ask an admin.")
        _logout_button()
        return
    _remember(user, oidc=True)
    st.rerun()


def page_user() -> CurrentUser:
    """The logged-in user, shown with a logout button in the sidebar; every page starts here.

    Stops the page when nobody is logged in (the app never routes there, but a page must not
    rely on that).
    """
    user = current_user()
    if user is None:
        st.stop()
    with st.sidebar:
        st.markdown(f"**{user.name}** · {user.role}")
        _logout_button(user)
    return user


def _logout_button(user: CurrentUser | None = None) -> None:
    if st.button("Log out", key="logout", icon=":material/logout:"):
        st.session_state.pop(SESSION_KEY, None)
        if (user is None or user.oidc) and oidc_configured():
            st.logout()
        st.rerun()
