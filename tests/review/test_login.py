"""Nothing is shown before a login; local accounts log in and out; OIDC uses st.login."""

from __future__ import annotations

from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from tests.review.conftest import PASSWORD


def _text(app: AppTest) -> str:
    parts = [str(element.value) for element in (*app.markdown, *app.title, *app.subheader,
                                                *app.caption, *app.info, *app.error)]
    return "\n".join(parts)


def test_nothing_but_the_login_form_before_a_login(review_url: str,
                                                   app: Callable[..., AppTest]) -> None:
    test = app().run()

    assert not test.exception
    assert [field.label for field in test.text_input] == ["User name", "Password"]
    assert not test.metric
    assert "Queue" not in _text(test)
    assert "cam-a" not in _text(test)
    assert not test.sidebar.button  # no navigation, no logout

    # A link straight to a frame shows the form, not the frame.
    test = app()
    test.query_params["verdict"] = "1"
    test.run()
    assert "Yes: frame" not in _text(test)
    assert [field.label for field in test.text_input] == ["User name", "Password"]


def test_wrong_password_is_refused_and_right_one_logs_in(review_url: str,
                                                         app: Callable[..., AppTest]) -> None:
    test = app().run()
    test.text_input(key="login_name").input("olga")
    test.text_input(key="login_password").input("wrong password")
    test.button[0].click().run()

    assert any("Wrong user name or password" in error.value for error in test.error)
    assert "agpt_user" not in test.session_state

    test.text_input(key="login_password").input(PASSWORD)
    test.button[0].click().run()

    assert not test.exception
    assert test.session_state["agpt_user"]["role"] == "operator"
    assert "**olga** · operator" in _text(test)
    assert test.title[0].value == "Queue"

    test.button(key="logout").click().run()

    assert "agpt_user" not in test.session_state
    assert [field.label for field in test.text_input] == ["User name", "Password"]


def test_oidc_shows_the_sso_button_then_maps_the_identity_to_an_account(
    review_url: str, app: Callable[..., AppTest]
) -> None:
    test = app()
    test.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback",
                            "cookie_secret": "x" * 32, "client_id": "agpt",
                            "client_secret": "s", "server_metadata_url": "http://idp/.well-known"}
    test.user = {"is_logged_in": False}
    test.run()

    assert [button.label for button in test.button] == ["Log in with single sign-on"]
    assert not test.text_input

    test.user = {"is_logged_in": True, "email": "ingrid@example.com", "name": "Ingrid"}
    test.run()

    assert not test.exception
    assert test.session_state["agpt_user"] == {"name": "ingrid@example.com",
                                                "role": "operator", "oidc": True}
    assert test.title[0].value == "Queue"
