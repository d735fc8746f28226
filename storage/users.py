"""Accounts of the review dashboard, their roles, and the server-side role check.

Passwords are stored as argon2id hashes (salt and parameters inside the PHC string). Roles
are ordered: ``operator`` (review and chat) < ``engineer`` (also change pools) < ``admin``
(also manage users). Every action function calls :func:`require_role` with the acting user's
name, so the check reads the account as it is at the moment of the action (a disabled or
demoted user is refused even while a dashboard session is still open). Functions never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.errors import PermissionDeniedError, UserExistsError, UserNotFoundError
from storage.models import User
from storage.types import utcnow

Role = Literal["operator", "engineer", "admin"]
ROLES: tuple[str, ...] = get_args(Role)
MIN_PASSWORD_LENGTH = 8
MAX_NAME_LENGTH = 128

_hasher = PasswordHasher()
# Verified when the name is unknown, so that a miss costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


@dataclass(frozen=True)
class UserView:
    """An account without its password hash."""

    id: int
    name: str
    role: str
    disabled: bool
    created_by: str
    created_at: datetime
    local: bool  # has a password (False: logs in through OIDC only)


def role_at_least(role: str, required: str) -> bool:
    """True when ``role`` includes the rights of ``required`` (operator < engineer < admin).

    Raises:
        ValueError: for a name outside :data:`ROLES`.
    """
    for name in (role, required):
        if name not in ROLES:
            msg = f"unknown role {name!r}; roles are {', '.join(ROLES)}"
            raise ValueError(msg)
    return ROLES.index(role) >= ROLES.index(required)


def create_user(*, session: Session, name: str, password: str | None, role: str,
                created_by: str = "") -> UserView:
    """Create an account.

    Args:
        session: Open session.
        name: Login name (1-128 characters, no surrounding spaces).
        password: At least 8 characters; None for an OIDC-only account.
        role: ``operator``, ``engineer`` or ``admin``.
        created_by: Who created it (user name or ``"cli"``).

    Returns:
        The new account.

    Raises:
        ValueError: an empty or too long name, a short password or an unknown role.
        UserExistsError: the name is taken.
    """
    _check_name(name)
    if role not in ROLES:
        msg = f"unknown role {role!r}; roles are {', '.join(ROLES)}"
        raise ValueError(msg)
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        msg = f"the password needs at least {MIN_PASSWORD_LENGTH} characters"
        raise ValueError(msg)
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise UserExistsError(name)
    user = User(name=name, role=role, created_by=created_by,
                password_hash=None if password is None else _hasher.hash(password))
    session.add(user)
    session.flush()
    return _view(user)


def authenticate(*, session: Session, name: str, password: str) -> UserView | None:
    """Check a local login.

    Returns:
        The account when the name exists, is enabled, has a password and ``password``
        matches it; else None (the caller says only "wrong name or password").
    """
    user = session.scalar(select(User).where(User.name == name))
    stored = user.password_hash if user is not None else None
    try:
        ok: bool = _hasher.verify(stored or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        ok = False
    if user is None or stored is None or not ok or user.disabled:
        return None
    if _hasher.check_needs_rehash(stored):
        user.password_hash = _hasher.hash(password)
        session.flush()
    return _view(user)


def get_user(*, session: Session, name: str) -> UserView | None:
    """The account named ``name``, or None."""
    user = session.scalar(select(User).where(User.name == name))
    return None if user is None else _view(user)


def list_users(*, session: Session) -> list[UserView]:
    """Every account, by name."""
    return [_view(user) for user in session.scalars(select(User).order_by(User.name))]


def disable_user(*, session: Session, name: str, actor: str) -> UserView:
    """Disable an account (it can no longer log in or act); the row is kept for the audit.

    Raises:
        UserNotFoundError: no such account.
    """
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise UserNotFoundError(name)
    if not user.disabled:
        user.disabled = True
        user.disabled_by = actor
        user.disabled_at = utcnow()
        session.flush()
    return _view(user)


def ensure_external_user(*, session: Session, name: str, role: str = "operator") -> UserView:
    """The account of a user who logged in through OIDC, created with ``role`` on first login.

    Raises:
        ValueError: an invalid name or role.
    """
    existing = get_user(session=session, name=name)
    if existing is not None:
        return existing
    return create_user(session=session, name=name, password=None, role=role,
                       created_by="oidc")


def require_role(*, session: Session, user: str, role: str) -> UserView:
    """The server-side check every action runs before it writes anything.

    Args:
        session: Open session (the account is read in it, as it is now).
        user: The acting user's name.
        role: The least role the action needs.

    Returns:
        The acting account.

    Raises:
        PermissionDeniedError: unknown user, disabled account, or a role below ``role``.
    """
    account = get_user(session=session, name=user)
    if account is None:
        msg = f"unknown user {user!r}"
        raise PermissionDeniedError(msg)
    if account.disabled:
        msg = f"user {user!r} is disabled"
        raise PermissionDeniedError(msg)
    if not role_at_least(account.role, role):
        msg = f"user {user!r} is {account.role}; this needs {role}"
        raise PermissionDeniedError(msg)
    return account


def _check_name(name: str) -> None:
    if not name or name != name.strip() or len(name) > MAX_NAME_LENGTH:
        msg = f"a user name has 1-{MAX_NAME_LENGTH} characters without surrounding spaces"
        raise ValueError(msg)


def _view(user: User) -> UserView:
    return UserView(id=user.id, name=user.name, role=user.role, disabled=user.disabled,
                    created_by=user.created_by, created_at=user.created_at,
                    local=user.password_hash is not None)
