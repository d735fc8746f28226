"""The operator's loop in a real browser: Debian's Chromium driven by Playwright.

The database comes from `agpt demo` (real textile frames judged by the real model, heatmaps
and masks stored); `agpt assistant` and `agpt dashboard` run as they do in production. The
test logs in, opens the newest flagged frame, checks the heatmap is drawn, asks the
assistant and watches the reply stream in, marks the frame normal (adding it to the pool),
visits the Pool and Overview pages, and logs out — asserting on the page at each step and
saving a screenshot of each (``AGPT_SCREENSHOTS_DIR`` also receives small copies, which the
README shows).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from PIL import Image

from storage import repositories as repo
from storage.engine import make_engine, make_session_factory
from tests.fixtures.processes import REPO_ROOT, free_port, http_status, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]
ENGINEER, PASSWORD = "erik", "browser-test-password"
STEP_TIMEOUT_MS = 60_000
DEMO_DATABASE_ENV = "AGPT_TEST_DEMO_DATABASE"


@pytest.fixture(scope="module")
def demo_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database filled by `agpt demo` (no dashboard), plus an engineer account.

    ``AGPT_TEST_DEMO_DATABASE`` (an SQLite file made by `agpt demo --no-dashboard`) is copied
    instead of running the demo, to iterate quickly.
    """
    folder = tmp_path_factory.mktemp("demo")
    url = f"sqlite:///{folder / 'demo.sqlite'}"
    reused = os.environ.get(DEMO_DATABASE_ENV)
    if reused:
        shutil.copyfile(reused, folder / "demo.sqlite")
    else:
        # cpu-small (224 px) as in the demo test, whose counts it shares.
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1",
               "AGPT_PROFILE": "cpu-small"}
        result = subprocess.run(
            [sys.executable, "-m", "agpt.cli", "demo", "--no-dashboard", "--frames", "40",
             "--shots", "5", "--database-url", url],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1200, check=False)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    engine = make_engine(url)
    try:
        with make_session_factory(engine).begin() as session:
            repo.create_user(session=session, name=ENGINEER, password=PASSWORD,
                             role="engineer", created_by="test")
            # The walk opens a flagged frame: 40 frames at 5 shots hold 5 global defects
            # (the demo test asserts at least 3 of them are caught).
            assert repo.count_verdicts(session=session, anomalous=True) > 0, "demo flagged none"
    finally:
        engine.dispose()
    return url


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "agpt.cli", *args], cwd=REPO_ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def dashboard(demo_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`agpt assistant` and `agpt dashboard` on free ports; yields the dashboard's URL."""
    logs = tmp_path_factory.mktemp("logs")
    assistant_port, dashboard_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1",
           "AGPT_DATABASE_URL": demo_database, "AGPT_PROFILE": "cpu-small-448",
           "AGPT_ASSISTANT_PORT": str(assistant_port),
           "AGPT_ASSISTANT_URL": f"http://127.0.0.1:{assistant_port}",
           "AGPT_DASHBOARD_PORT": str(dashboard_port)}
    assistant = _start(["assistant", "--host", "127.0.0.1"], env, logs / "assistant.log")
    server = _start(["dashboard"], env, logs / "dashboard.log")
    try:
        def tail() -> str:
            return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                             for p in sorted(logs.iterdir()))

        wait_for(lambda: http_status(f"http://127.0.0.1:{assistant_port}/health") == 200,
                 timeout_s=600, what="the assistant's model", diagnose=tail)
        wait_for(lambda: http_status(f"http://127.0.0.1:{dashboard_port}/_stcore/health")
                 == 200, timeout_s=120, what="the dashboard", diagnose=tail)
        yield f"http://127.0.0.1:{dashboard_port}"
    finally:
        _stop(server)
        _stop(assistant)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Debian Chromium (installed by `make test`), never a downloaded build."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium "
                    "(apt-get install chromium)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


class Screens:
    """Saves full-page screenshots, and small palette copies to ``AGPT_SCREENSHOTS_DIR``."""

    def __init__(self, page: object, folder: Path) -> None:
        """Save into ``folder``."""
        self.page = page
        self.folder = folder
        self.published = os.environ.get("AGPT_SCREENSHOTS_DIR")

    def shoot(self, name: str) -> Path:
        """Screenshot the whole page as ``name.png``, once its images and charts are drawn."""
        page = self.page
        path = self.folder / f"{name}.png"
        page.wait_for_load_state("networkidle")  # type: ignore[attr-defined]
        page.wait_for_function(  # type: ignore[attr-defined]
            "[...document.images].every(img => img.complete && img.naturalWidth > 0)")
        page.wait_for_timeout(800)  # type: ignore[attr-defined]  # charts finish drawing
        # Streamlit scrolls inside its main section: grow the window to the content instead.
        size = page.viewport_size  # type: ignore[attr-defined]
        height = page.evaluate(  # type: ignore[attr-defined]
            "Math.max(...[...document.querySelectorAll('section, [data-testid=stMain]')]"
            ".map(e => e.scrollHeight), document.body.scrollHeight)")
        page.set_viewport_size({"width": size["width"],  # type: ignore[attr-defined]
                                "height": min(max(int(height), size["height"]), 4000)})
        page.wait_for_timeout(500)  # type: ignore[attr-defined]
        page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
        page.set_viewport_size(size)  # type: ignore[attr-defined]
        if self.published:
            small = Image.open(path).convert("RGB")
            small.thumbnail((1100, 2000))
            target = Path(self.published) / f"{name}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            small.quantize(colors=128).save(target, optimize=True)
        return path


def _saturated_share(png: bytes) -> float:
    """Share of strongly coloured pixels (the heatmap's blues and reds; textiles are grey)."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)
    spread = pixels.max(axis=-1) - pixels.min(axis=-1)
    return float((spread > 60).mean())


def test_operator_loop_in_chromium(dashboard: str, demo_database: str, browser: object,
                                   tmp_path: Path) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
    page = context.new_page()
    page.set_default_timeout(STEP_TIMEOUT_MS)
    screens = Screens(page, tmp_path)

    # 1. Nothing but the login form before a login.
    page.goto(dashboard)
    expect(page.get_by_role("textbox", name="User name")).to_be_visible()
    expect(page.get_by_text("Unreviewed flagged frames")).to_have_count(0)
    screens.shoot("login")
    page.get_by_role("textbox", name="User name").fill(ENGINEER)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    # 2. The queue: flagged frames with thumbnails, newest first.
    expect(page.get_by_text("Unreviewed flagged frames")).to_be_visible()
    expect(page.get_by_text(f"{ENGINEER} · engineer")).to_be_visible()
    first_open = page.locator('[class*="st-key-open_"] button').first
    expect(first_open).to_be_visible()
    screens.shoot("queue")
    first_open.click()

    # 3. The frame: heatmap overlay drawn over the real frame.
    expect(page.get_by_text("anomaly heatmap from")).to_be_visible()
    picture = page.locator('[data-testid="stImage"] img').first
    expect(picture).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                           arg=picture.element_handle())
    coloured = _saturated_share(picture.screenshot())
    assert coloured > 0.3, f"only {coloured:.0%} of the frame is coloured by the heatmap"
    title = page.locator("h1").first.inner_text()
    verdict_id = int(parse_qs(urlparse(page.url).query)["verdict"][0])

    # 4. Chat: the reply streams in piece by piece, then it is stored with the user.
    page.get_by_placeholder("Ask about this frame").fill("Where is the defect?")
    page.keyboard.press("Enter")
    messages = page.locator('[data-testid="stChatMessage"]')
    expect(messages).to_have_count(2)
    reply = messages.nth(1)
    seen: list[str] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        text = reply.inner_text().strip()
        if not seen or text != seen[-1]:
            seen.append(text)
        if page.locator('[data-testid="stChatInput"] textarea').is_enabled() and \
                len(seen) > 1 and text == seen[-1] and _stored_chat(demo_database, verdict_id):
            break
        time.sleep(0.05)
    stored = _stored_chat(demo_database, verdict_id)
    assert [(m.role, m.author) for m in stored] == [("user", ENGINEER),
                                                    ("assistant", stored[1].author)]
    assert stored[1].text.strip()
    partial = [text for text in seen if text and text != seen[-1]]
    assert partial, f"the reply did not arrive in pieces: {seen}"
    screens.shoot("frame")

    # 5. Not a defect: added to the pool, with undo offered.
    page.get_by_role("button", name="Not a defect — add to pool").click()
    expect(page.get_by_text("added to the textile pool")).to_be_visible()
    expect(page.get_by_role("button", name="Undo: remove entry")).to_be_visible()
    expect(page.get_by_text("not a defect").first).to_be_visible()
    assert page.locator("h1").first.inner_text() == title

    # 6. The pool and the overview.
    page.get_by_role("link", name="Pool").click()
    expect(page.get_by_text("Version history")).to_be_visible()
    expect(page.get_by_text("Pool version")).to_be_visible()
    screens.shoot("pool")
    page.get_by_role("link", name="Overview").click()
    expect(page.get_by_text("Anomaly rate per camera")).to_be_visible()
    page.wait_for_timeout(1500)  # charts draw after the text
    screens.shoot("overview")

    # 7. Log out: back to the form, nothing else shown.
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("textbox", name="User name")).to_be_visible()
    expect(page.get_by_text("Unreviewed flagged frames")).to_have_count(0)
    context.close()
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "frame.png", "login.png", "overview.png", "pool.png", "queue.png"]


def _stored_chat(url: str, verdict_id: int) -> list[repo.ChatMessageView]:
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            return repo.list_chat_messages(session=session, verdict_id=verdict_id)
    finally:
        engine.dispose()


def test_chromium_is_debian_s() -> None:
    # `make test` installs Debian's package; Playwright is pointed at it, never at a download.
    assert CHROMIUM.exists()
    assert shutil.which("chromium") == str(CHROMIUM)
