"""Users page under AppTest: admins add and disable accounts; anyone else is refused."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from storage import repositories as repo
from tests.review.conftest import read


def _open(app: Callable[..., AppTest], user: str, **claims: str) -> AppTest:
    test = app(user, **claims).run()
    test.switch_page("screens/users.py")
    return test.run()


def test_admin_adds_and_disables_accounts(review_url: str, app: Callable[..., AppTest]) -> None:
    test = _open(app, "ada")

    assert not test.exception
    assert set(test.dataframe[0].value["name"]) == {"ada", "emil", "olga"}
    test.text_input(key="new_user_name").input("nina")
    test.selectbox(key="new_user_role").set_value("engineer")
    test.text_input(key="new_user_password").input("nina's long password")
    test.button[[b.label for b in test.button].index("Add account")].click().run()

    assert any("Account nina added (engineer)" in s.value for s in test.success)
    nina = read(review_url, repo.get_user, name="nina")
    assert (nina.role, nina.created_by, nina.local) == ("engineer", "ada", True)  # type: ignore[attr-defined]

    test.selectbox(key="disable_user_name").set_value("olga")
    test.button[[b.label for b in test.button].index("Disable")].click().run()

    assert read(review_url, repo.get_user, name="olga").disabled  # type: ignore[attr-defined]
    assert read(review_url, repo.authenticate, name="olga",
                password="correct horse battery") is None


def test_a_forged_admin_session_is_refused(review_url: str,
                                           app: Callable[..., AppTest]) -> None:
    test = _open(app, "emil", role="admin")
    test.text_input(key="new_user_name").input("mallory")
    test.text_input(key="new_user_password").input("mallory's password")
    test.button[[b.label for b in test.button].index("Add account")].click().run()

    assert any("Refused: user 'emil' is engineer; this needs admin" in e.value
               for e in test.error)
    assert read(review_url, repo.get_user, name="mallory") is None


def test_the_users_page_is_not_offered_to_others(review_url: str,
                                                 app: Callable[..., AppTest]) -> None:
    test = app("emil").run()

    with pytest.raises(ValueError, match="users.py"):
        test.switch_page("screens/users.py")
