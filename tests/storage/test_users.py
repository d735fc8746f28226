"""Accounts: salted argon2 hashes, login, disable, and the server-side role check."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import User
from storage.repositories import (
    PermissionDeniedError,
    UserExistsError,
    UserNotFoundError,
    authenticate,
    create_user,
    disable_user,
    ensure_external_user,
    list_users,
    require_role,
    role_at_least,
)


def test_passwords_are_salted_hashes_and_log_in(session: Session) -> None:
    create_user(session=session, name="ann", password="correct horse", role="operator")
    create_user(session=session, name="bob", password="correct horse", role="engineer")
    session.commit()

    hashes = dict(session.execute(select(User.name, User.password_hash)).all())
    assert all(h.startswith("$argon2id$") for h in hashes.values())
    assert "correct horse" not in hashes["ann"]
    assert hashes["ann"] != hashes["bob"]  # same password, different salt
    assert authenticate(session=session, name="ann", password="correct horse").role == "operator"
    assert authenticate(session=session, name="ann", password="wrong horse") is None
    assert authenticate(session=session, name="nobody", password="correct horse") is None


def test_disabled_users_cannot_log_in_or_act(session: Session) -> None:
    create_user(session=session, name="ann", password="correct horse", role="admin")
    disable_user(session=session, name="ann", actor="root")
    session.commit()

    assert authenticate(session=session, name="ann", password="correct horse") is None
    with pytest.raises(PermissionDeniedError, match="disabled"):
        require_role(session=session, user="ann", role="operator")
    [ann] = list_users(session=session)
    assert ann.disabled
    with pytest.raises(UserNotFoundError):
        disable_user(session=session, name="zed", actor="root")


def test_roles_are_ordered_and_checked_in_the_database(session: Session) -> None:
    create_user(session=session, name="op", password="12345678", role="operator")
    create_user(session=session, name="eng", password="12345678", role="engineer")

    assert require_role(session=session, user="eng", role="operator").name == "eng"
    with pytest.raises(PermissionDeniedError, match="operator; this needs engineer"):
        require_role(session=session, user="op", role="engineer")
    with pytest.raises(PermissionDeniedError, match="unknown user"):
        require_role(session=session, user="ghost", role="operator")
    assert role_at_least("admin", "engineer")
    assert not role_at_least("operator", "admin")


@pytest.mark.parametrize(("name", "password", "role"), [
    ("", "12345678", "operator"), (" ann", "12345678", "operator"),
    ("ann", "short", "operator"), ("ann", "12345678", "boss"),
])
def test_invalid_accounts_are_refused(session: Session, name: str, password: str,
                                      role: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is checked by the CLI test
        create_user(session=session, name=name, password=password, role=role)


def test_names_are_unique_and_oidc_users_have_no_password(session: Session) -> None:
    create_user(session=session, name="ann", password="12345678", role="operator")
    with pytest.raises(UserExistsError):
        create_user(session=session, name="ann", password="12345678", role="admin")

    external = ensure_external_user(session=session, name="carol@example.com")
    assert (external.role, external.local) == ("operator", False)
    assert ensure_external_user(session=session, name="carol@example.com").id == external.id
    assert authenticate(session=session, name="carol@example.com", password="") is None
