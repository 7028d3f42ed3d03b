"""End to end in a real browser: `streamlit run` on localhost, Debian's headless Chromium driven by
selenium.

Asks a question in Compare mode, waits for both columns, and saves a screenshot
(kept under the test's temporary folder; set BROWSER_SCREENSHOT=path to keep a copy).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import REPO
from tests.fake_llm import llm_env, reranker_env

pytestmark = pytest.mark.slow
QUESTION = "How many days of paid sick leave do full-time staff get?"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def streamlit_url(sample_config, tiny_cross_encoder, llm_server, tmp_path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(
        {
            "RAG_CONFIG": str(sample_config),
            **reranker_env(tiny_cross_encoder),
            **llm_env(llm_server.url),
            "HF_HUB_OFFLINE": "1",
            "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
        }
    )
    log = (tmp_path / "streamlit.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "ui/app.py",
            "--server.headless",
            "true",
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.read() == b"ok":
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"streamlit did not start: {(tmp_path / 'streamlit.log').read_text()[-2000:]}")
    yield url
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None or CHROMEDRIVER is None:
        if os.environ.get("CI"):
            pytest.fail(
                "CI needs Debian's chromium and chromium-driver (scripts/setup.sh installs them as "
                "root)"
            )
        pytest.skip("chromium/chromedriver not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1600,1400",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def timing_captions(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    captions = driver.find_elements(By.CSS_SELECTOR, "[data-testid='stCaptionContainer']")
    return [c.text for c in captions if c.text.startswith("retrieve ")]


def test_compare_in_a_real_browser(streamlit_url, browser, llm_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    llm_server.script += [
        {"pieces": ["Full-time staff get 10 days of paid sick leave [2]."], "delay": 2},
        {"pieces": ["Full-time staff get 10 days of paid sick leave [1]."]},
    ]
    browser.get(streamlit_url)
    from selenium.common.exceptions import StaleElementReferenceException

    wait = WebDriverWait(browser, 120, ignored_exceptions=(StaleElementReferenceException,))
    wait.until(
        ready.presence_of_element_located((By.CSS_SELECTOR, "[data-testid='stChatInputTextArea']"))
    )
    # a minimal toolbar
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-testid='stAppDeployButton']")
    browser.find_element(By.XPATH, "//label[.//p[normalize-space()='Compare A/B']]").click()
    wait.until(
        lambda d: d.find_element(
            By.XPATH, "//label[.//p[normalize-space()='Compare A/B']]//input"
        ).is_selected()
    )
    box = browser.find_element(By.CSS_SELECTOR, "[data-testid='stChatInputTextArea']")
    box.send_keys(QUESTION)
    box.send_keys(Keys.ENTER)
    # while the LLM thinks (the stand-in waits 2 s), the page says which stage runs
    wait.until(
        lambda d: any(
            c.text.startswith("⏳ Writing the answer with openai:stand-in")
            for c in d.find_elements(By.CSS_SELECTOR, "[data-testid='stCaptionContainer']")
        )
    )
    # done once the page is drawn again with each side knowing the other's sources
    wait.until(
        lambda d: (
            len(
                [
                    c
                    for c in d.find_elements(By.CSS_SELECTOR, "[data-testid='stCaptionContainer']")
                    if "on this side" in c.text or "same sources as the other side" in c.text
                ]
            )
            == 2
        )
    )
    assert len(timing_captions(browser)) == 2
    assert not [
        c
        for c in browser.find_elements(By.CSS_SELECTOR, "[data-testid='stCaptionContainer']")
        if c.text.startswith("⏳")
    ]  # and says nothing once both answers are done
    left, right = timing_captions(browser)
    assert "rerank" not in left and " · rerank " in right
    headers = [
        h.text for h in browser.find_elements(By.CSS_SELECTOR, "[data-testid='stChatMessage'] h3")
    ]
    assert headers == ["Bi-encoder only", "Reranked"]
    page = browser.find_element(By.TAG_NAME, "body").text
    assert page.count("Full-time staff get 10 days of paid sick leave") == 2
    summaries = [s.text for s in browser.find_elements(By.TAG_NAME, "summary")]
    moves = [t for t in summaries if re.search(r"#\d+ → #\d+", t)]
    assert len(moves) == 5, summaries  # the reranked side's sources, each with its rank move
    assert sum("★" in t for t in summaries) == 2  # each side's rank-1 source, marked
    assert (
        sum(
            "ranked first: [" in c.text
            for c in browser.find_elements(By.CSS_SELECTOR, "[data-testid='stCaptionContainer']")
        )
        == 2
    )
    only = [t for t in summaries if "only on this side" in t]
    # as many on each side
    assert len(only) % 2 == 0 and sum("→" in t for t in only) == len(only) // 2
    shot = tmp_path / "compare.png"
    browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("BROWSER_SCREENSHOT"):
        shutil.copy(shot, os.environ["BROWSER_SCREENSHOT"])
