"""Retake the README's hero picture: the Compare view of one question, from the real app.

Starts `streamlit run ui/app.py` on localhost with the config it is given (RAG_CONFIG,
default config.offline.toml, over a store already ingested: `python -m ingest docs/`),
asks QUESTION in Compare mode through Debian's headless Chromium, waits for both
answers, and saves the page as a PNG. Nothing is stood in for: the models are the
profile's own, so with the local Gemma this takes a minute or two on 2 cores.

    python scripts/screenshot.py "How fast must a SEV1 page be acknowledged?" \\
        ui/screenshots/compare.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(port: int, log_path: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "RAG_CONFIG": os.environ.get("RAG_CONFIG", "config.offline.toml"),
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    }
    log = log_path.open("w")
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
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/_stcore/health", timeout=2
            ) as reply:
                if reply.read() == b"ok":
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"streamlit did not start; its log: {log_path}")


def browser(profile: Path, width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        raise SystemExit(
            "needs Debian's chromium and chromium-driver (scripts/setup.sh installs them as root)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("question")
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", default="1600,1500", help="window width,height in pixels")
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds to wait for both answers"
    )
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split(","))

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        app = start_app(port, Path(tmp) / "streamlit.log")
        driver = browser(Path(tmp) / "profile", width, height)
        try:
            driver.get(f"http://127.0.0.1:{port}")
            from selenium.common.exceptions import StaleElementReferenceException

            wait = WebDriverWait(
                driver, args.timeout, ignored_exceptions=(StaleElementReferenceException,)
            )
            wait.until(
                ready.presence_of_element_located(
                    (By.CSS_SELECTOR, "[data-testid='stChatInputTextArea']")
                )
            )
            toggle = "//label[.//p[normalize-space()='Compare A/B']]"
            driver.find_element(By.XPATH, toggle).click()
            wait.until(lambda d: d.find_element(By.XPATH, toggle + "//input").is_selected())
            box = driver.find_element(By.CSS_SELECTOR, "[data-testid='stChatInputTextArea']")
            box.send_keys(args.question)
            box.send_keys(Keys.ENTER)

            # both sides done, and drawn again knowing each other's sources
            def answered(d) -> bool:
                captions = d.find_elements(By.CSS_SELECTOR, "[data-testid='stCaptionContainer']")
                return (
                    sum(1 for c in captions if c.text.startswith("retrieve ")) == 2
                    and sum(
                        1
                        for c in captions
                        if "on this side" in c.text or "same sources as the other" in c.text
                    )
                    == 2
                )

            wait.until(answered)
            time.sleep(1)  # let the last column settle before the picture
            args.out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.out))
        finally:
            driver.quit()
            app.terminate()
            app.wait(timeout=30)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
