"""End to end in a real browser: Debian's chromium driven by Selenium through Debian's
chromedriver (nothing is downloaded), against a real `agentx serve` process on a real
workspace. Screenshots go to $AGENTX_SCREENSHOTS (default: the test's temp folder)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from agentx.cli import app as cli
from knowledge import KnowledgeBase
from planted_cross_repo import adopted_planted_repo
from tools.git_repo import WorkspaceRepo

pytestmark = pytest.mark.slow
ASK = "add the product of f7 and f8"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def shots(tmp_path):
    folder = Path(os.environ.get("AGENTX_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        message = "chromium and chromedriver are needed (`make browser` installs Debian's)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(repo: Path, port: int, home: Path, log: Path) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "agentx.cli", "serve", "--workspace", str(repo),
                               "--port", str(port)], env={**os.environ, "HOME": str(home)},
                              stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/run", timeout=2)
            return server
        except httpx.TransportError:
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)


def stop_server(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


def wait(driver, css: str, *, text: str | None = None, timeout: float = 30):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    locator = (By.CSS_SELECTOR, css)
    condition = ec.text_to_be_present_in_element(locator, text) if text else ec.visibility_of_element_located(locator)
    WebDriverWait(driver, timeout).until(condition)
    return driver.find_element(*locator)


def test_chat_request_to_a_merged_pull_request(browser, shots, tmp_path):
    from selenium.webdriver.common.by import By

    repo = adopted_planted_repo(tmp_path)
    port, log = free_port(), tmp_path / "serve.log"
    server = start_server(repo, port, tmp_path, log)
    base = f"http://127.0.0.1:{port}"
    try:
        browser.get(f"{base}/experiments")
        assert "no experiments yet" in wait(browser, "#experiments").text
        browser.save_screenshot(str(shots / "01-experiments-empty.png"))

        browser.get(f"{base}/chat")
        wait(browser, "#chat-text").send_keys(ASK)
        browser.find_element(By.ID, "chat-send").click()
        proposal = wait(browser, ".msg.proposal", text="product(f7,f8)")
        assert "Set knobs features +product(f7,f8)" in proposal.text
        browser.save_screenshot(str(shots / "02-chat-proposal.png"))
        proposal.find_element(By.CSS_SELECTOR, "button.confirm").click()
        wait(browser, ".msg.queued", text="queued as request")

        chat_tab = browser.current_window_handle           # the run in progress, in a second tab
        browser.switch_to.new_window("tab")
        browser.get(base + "/")
        stage = wait(browser, "#run-status .stage", timeout=30)
        assert stage.text
        wait(browser, "#recent", text="running", timeout=10)            # the tables follow the worker too
        browser.save_screenshot(str(shots / "03-run-in-progress.png"))
        browser.close()
        browser.switch_to.window(chat_tab)

        wait(browser, "#chat-progress", text="E0001: micro tier passed", timeout=180)
        verdict = wait(browser, "#chat-outcome .verdict", text="ship", timeout=240)
        assert "E0001" in verdict.text and "pull request #1" in verdict.text
        browser.save_screenshot(str(shots / "04-chat-verdict.png"))

        verdict.find_element(By.CSS_SELECTOR, "a.pr-link").click()
        wait(browser, "#approve")
        assert "product(f7,f8)" in browser.find_element(By.CSS_SELECTOR, "pre.diff").text
        browser.save_screenshot(str(shots / "05-pull-request.png"))
        browser.find_element(By.ID, "reviewer").send_keys("Ada Lovelace")
        browser.find_element(By.ID, "approve").click()
        notice = wait(browser, "#notice", text="merged into main at", timeout=60)
        browser.save_screenshot(str(shots / "06-merged.png"))

        pr = KnowledgeBase.for_workspace(repo).get_pull_request(1)
        git = WorkspaceRepo(repo)
        assert pr["state"] == "merged" and pr["reviewed_by"] == "Ada Lovelace (web)"
        assert git.head() == pr["merge_commit"] and pr["merge_commit"][:10] in notice.text
        assert "Experiment-Id: E0001" in git.repo.git.log("-1", "--format=%B")
        assert "product(f7,f8)" in (repo / "conf" / "model.json").read_text()

        browser.get(f"{base}/experiments")
        browser.find_element(By.CSS_SELECTOR, 'th a[data-key="delta"]').click()
        assert "merged" in wait(browser, "#experiments").text
        browser.save_screenshot(str(shots / "07-experiments-after.png"))
    finally:
        stop_server(server)


@pytest.mark.timeout(900)      # a MovieLens baseline and one experiment: 2 to 4 minutes
def test_the_demo_report_renders_its_plots_with_networking_off(browser, shots, tmp_path):
    ws = tmp_path / "demo"
    demo = CliRunner().invoke(cli, ["demo", "--dir", str(ws), "--experiments", "1", "--seeds", "2"])
    assert demo.exit_code == 0, demo.output
    kb = KnowledgeBase.for_workspace(ws)
    (experiment,) = kb.experiments()
    html = tmp_path / "report.html"
    printed = CliRunner().invoke(cli, ["report", "--workspace", str(ws), "--since", "1h", "--html", str(html)])
    assert printed.exit_code == 0, printed.output
    outcome = kb.verdicts(experiment["id"])[-1]["decision"] if kb.verdicts(experiment["id"]) else experiment["status"]
    assert f"ran: 1 experiments (1 {outcome})" in printed.output, printed.output
    assert "spend: $0.00 on 0 LLM calls" in printed.output and "micro tier (develop): 1 runs" in printed.output
    print(printed.output)

    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                                                                 "downloadThroughput": 0, "uploadThroughput": 0})
    browser.get(html.as_uri())
    figures = browser.execute_script("""
        return Array.from(document.querySelectorAll('svg.plot')).map(s => {
          const box = s.getBoundingClientRect();
          return {cls: s.getAttribute('class'), w: box.width, h: box.height,
                  marks: s.querySelectorAll('.mark').length};
        });""")
    assert [f["cls"] for f in figures] == ["plot forest", "plot lines", "plot bars", "plot bars"], figures
    assert all(f["w"] >= 500 and f["h"] >= 50 and f["marks"] >= 1 for f in figures), figures
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert fetched == [] and browser.execute_script("return document.scripts.length") == 0
    browser.save_screenshot(str(shots / "08-demo-report-offline.png"))

    # the experiment's page plots the learning curves movielens-ctr's train.py writes (curve.csv)
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                                 "downloadThroughput": -1, "uploadThroughput": -1})
    port = free_port()
    server = start_server(ws, port, tmp_path, tmp_path / "serve.log")
    try:
        browser.get(f"http://127.0.0.1:{port}/experiments/{experiment['id']}")
        curves = wait(browser, "svg.plot.lines")
        assert "learning curves" in curves.text
        assert browser.execute_script("return document.querySelector('svg.plot.lines').querySelectorAll('.series')"
                                      ".length") == len([r for r in kb.runs(experiment["id"]) if r["status"] == "ok"])
        browser.save_screenshot(str(shots / "09-demo-experiment.png"))
    finally:
        stop_server(server)
