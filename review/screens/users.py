"""Users (admins only): the accounts, who created them, add and disable.

The same as `agpt user add|list|disable`. Each change first checks, in its own transaction,
that the acting account is an enabled admin in the database (a stale or forged session is
refused), and is recorded with who made it.
"""

from __future__ import annotations

import streamlit as st

from review import auth, data, labels
from review.frame_actions import flash, show_flash
from storage import repositories as repo

ADMIN = "admin"


def render() -> None:
    """Draw the users page."""
    user = auth.page_user()
    st.title("Users")
    show_flash()
    if not user.may(ADMIN):
        st.info("Only admins manage accounts.")
        return
    with data.reading() as session:
        accounts = repo.list_users(session=session)
    st.dataframe(
        [{"name": a.name, "role": a.role, "state": "disabled" if a.disabled else "active",
          "login": "password" if a.local else "single sign-on",
          "created": labels.when(a.created_at), "by": a.created_by or "-"}
         for a in accounts],
        hide_index=True, width="stretch",
    )
    _add(user)
    _disable(user, [a.name for a in accounts if not a.disabled and a.name != user.name])


def _add(user: auth.CurrentUser) -> None:
    with st.form("user_add", clear_on_submit=True):
        st.subheader("Add an account")
        name = st.text_input("Name", key="new_user_name", max_chars=128)
        role = st.selectbox("Role", repo.ROLES, key="new_user_role")
        password = st.text_input("Password (8+ characters)", type="password",
                                 key="new_user_password")
        submitted = st.form_submit_button("Add account")
    if not submitted:
        return
    try:
        with data.writing() as session:
            repo.require_role(session=session, user=user.name, role=ADMIN)
            made = repo.create_user(session=session, name=name.strip(), password=password,
                                    role=role, created_by=user.name)
    except repo.PermissionDeniedError as exc:
        st.error(f"Refused: {exc}")
        return
    except (repo.UserExistsError, ValueError) as exc:
        st.error(f"Not added: {exc}")
        return
    flash("success", f"Account {made.name} added ({made.role}).")
    st.rerun()


def _disable(user: auth.CurrentUser, names: list[str]) -> None:
    if not names:
        return
    with st.form("user_disable"):
        st.subheader("Disable an account")
        name = st.selectbox("Account", names, key="disable_user_name")
        submitted = st.form_submit_button("Disable")
    if not submitted or name is None:
        return
    try:
        with data.writing() as session:
            repo.require_role(session=session, user=user.name, role=ADMIN)
            repo.disable_user(session=session, name=name, actor=user.name)
    except repo.PermissionDeniedError as exc:
        st.error(f"Refused: {exc}")
        return
    except repo.UserNotFoundError as exc:
        st.error(f"Not disabled: {exc}")
        return
    flash("success", f"Account {name} disabled; it can no longer log in or act.")
    st.rerun()


if __name__ == "__main__":
    render()
