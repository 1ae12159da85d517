"""A real pipeline run's report.html, rendered by headless Chromium over the DevTools protocol.

The run (small toy web, tiny model, a few steps of every training stage) is the session
fixture ``tiny_pipeline`` in conftest.py, shared with the end-to-end workflow test. Chromium
loads the page from disk with networking off; the test reads console errors, section ids and
plot sizes from the live page, checks
that the toy web's planted ``<script>`` is shown as text and never ran, and saves a screenshot
(also to ``$LLMPIPE_ARTIFACTS`` when set). Skipped only when no Chromium binary exists.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from llmpipe.data.toyweb.defects import ESCAPED_SCRIPT

pytestmark = pytest.mark.slow

SECTION_IDS = ["summary", "funnel", "dedup", "tokenizer", "packing", "pretrain",
               "evaluation", "generations", "sft", "dpo", "rl"]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking"]

def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


class DevTools:
    """A minimal Chrome DevTools Protocol session on one page target (websocket-client)."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(f"no {method} within {timeout} s")

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary = chromium()
    if binary is None:
        pytest.skip("no Chromium binary (apt-get install chromium); the browser test needs one")
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, "--remote-debugging-port=0", f"--user-data-dir={profile}",
                             "--window-size=1280,1600", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if match := re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line):
                port = int(match.group(1))
            elif not line and proc.poll() is not None:
                break
        assert port, f"Chromium did not start its DevTools endpoint (exit {proc.poll()})"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:
            pages = [t for t in json.load(response) if t["type"] == "page"]
        yield DevTools(pages[0]["webSocketDebuggerUrl"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def loaded(tiny_pipeline, browser) -> DevTools:
    page = tiny_pipeline.root / "results" / "report.html"
    assert page.exists()
    for domain in ("Page", "Runtime", "Log"):
        browser.call(f"{domain}.enable")
    browser.call("Page.navigate", url=page.resolve().as_uri())
    browser.wait_for("Page.loadEventFired")
    return browser


def test_report_renders_without_errors(loaded):
    errors = [e for e in loaded.events
              if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert errors == []


def test_sections_and_plots_are_visible(loaded):
    ids = loaded.evaluate("[...document.querySelectorAll('section')].map(s => s.id)")
    assert set(SECTION_IDS) <= set(ids)
    sizes = loaded.evaluate(
        "[...document.querySelectorAll('figure.plot svg')].map(s => {"
        " const r = s.getBoundingClientRect(); return [r.width, r.height]; })")
    assert len(sizes) >= 8  # timing, funnel, pretrain curves, evaluation, post-training curves
    assert all(w > 0 and h > 0 for w, h in sizes), sizes
    not_run = loaded.evaluate("document.querySelectorAll('#sft .notrun, #dpo .notrun, #rl .notrun').length")
    assert not_run == 0  # every stage ran in this pipeline


def test_planted_script_is_text_and_did_not_run(loaded):
    assert loaded.evaluate("document.scripts.length") == 0
    assert not [e for e in loaded.events if e.get("method") == "Page.javascriptDialogOpening"]
    planted = ESCAPED_SCRIPT[ESCAPED_SCRIPT.index("<script>"):ESCAPED_SCRIPT.index("</script>") + 9]
    assert loaded.evaluate(f"document.getElementById('planted').textContent.includes({json.dumps(planted)})")


def test_screenshot(loaded, tmp_path):
    shot = loaded.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    png = base64.b64decode(shot["data"])
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    (tmp_path / "report.png").write_bytes(png)
    if artifacts := os.environ.get("LLMPIPE_ARTIFACTS"):
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        (Path(artifacts) / "report.png").write_bytes(png)


def test_snakemake_report(tiny_pipeline, tmp_path):
    out = tmp_path / "snakemake-report.html"
    tiny_pipeline.snakemake("--report", str(out), timeout=600)
    assert out.exists() and out.stat().st_size > 0
