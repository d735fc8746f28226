"""The review dashboard's entry point: login gate, then one page module per task.

Run with ``agpt dashboard`` (or ``streamlit run review/app.py``). Configuration:
``AGPT_DATABASE_URL`` (the database), ``AGPT_ASSISTANT_URL`` (the chat endpoint),
``AGPT_WORKER_METRICS_URLS`` (workers' ``/metrics`` for the Overview), and an optional
``[auth]`` section in ``.streamlit/secrets.toml`` for OIDC.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from review import auth, data

PAGES = Path(__file__).resolve().parent / "screens"


def main() -> None:
    """Render the login page, or the navigation and the selected page."""
    st.set_page_config(page_title="AnomalyGPT review", page_icon=":material/search:",
                       layout="wide")
    problem = data.database_problem(data.database_url())
    if problem is not None:
        st.error(problem)
        st.stop()
    user = auth.current_user()
    if user is None:
        st.navigation([st.Page(auth.login_page, title="Log in", url_path="login")],
                      position="hidden").run()
        return
    pages = [
        st.Page(PAGES / "queue.py", title="Queue", icon=":material/inbox:", default=True),
        st.Page(PAGES / "frame.py", title="Frame", icon=":material/image_search:"),
        st.Page(PAGES / "pool.py", title="Pool", icon=":material/photo_library:"),
        st.Page(PAGES / "overview.py", title="Overview", icon=":material/monitoring:"),
    ]
    if user.may("admin"):
        pages.append(st.Page(PAGES / "users.py", title="Users", icon=":material/group:"))
    st.navigation(pages).run()


if __name__ == "__main__":
    main()
