"""The web console in a real browser (Debian's Chromium, driven by
Selenium through chromium-driver), against real API servers on SQLite and
PostgreSQL with real Ray and S3, runs submitted through the real CLI.

Each page is saved as a screenshot in the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import insert

from rgrid.wire import Status
from rgrid_api.db.models import Execution
from tests.support.console import cli_env, database, login_link, submit
from tests.support.history import execution_row
from tests.support.services import ApiServer

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
REQUIRE_BROWSER = os.environ.get("RGRID_REQUIRE_BROWSER") == "1"
RGRID = [sys.executable, "-m", "rgrid"]

if not (CHROMIUM and DRIVER):
    reason = "Chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
    if REQUIRE_BROWSER:
        raise RuntimeError(reason)
    pytest.skip(reason, allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1360,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.set_page_load_timeout(30)
    SHOWN.append(driver)
    yield driver
    SHOWN.clear()
    driver.quit()


SHOWN: list[WebDriver] = []  # the module's browser, whose page a failure quotes


def until(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Check until true. An element the live page replaced between being
    found and being read is looked for again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except StaleElementReferenceException:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            page = (
                SHOWN[0].current_url + "\n" + SHOWN[0].find_element(By.TAG_NAME, "body").text if SHOWN else ""
            )
            raise AssertionError(f"gave up waiting for {what}; the page:\n{page}")
        time.sleep(0.1)


def text_of(driver: WebDriver, css: str) -> str:
    """The first match's text, read in one step (the page may reload meanwhile)."""
    found = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", css
    )
    return str(found)


def all_text(driver: WebDriver, css: str) -> str:
    found = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText).join(' ');", css
    )
    return str(found)


def texts_of(driver: WebDriver, css: str) -> list[str]:
    """Every match's text, read in one step (live rows may be replaced
    between finding an element and reading it)."""
    found = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText);", css
    )
    return [str(i) for i in found]


def ids_shown(driver: WebDriver) -> list[str]:
    """The run ids of the list on the page."""
    return texts_of(driver, "#runs td.id")


def log_in(driver: WebDriver, api: ApiServer, key: str, home: Path) -> None:
    driver.delete_all_cookies()
    driver.get(login_link(api, key, home))
    until(lambda: text_of(driver, "h1") == "Runs", "the runs page after the login link")


def click_button(driver: WebDriver, label: str) -> bool:
    """Click the action button so labelled, if the page shows it."""
    for button in driver.find_elements(By.CSS_SELECTOR, ".actions button"):
        if button.text == label:
            button.click()
            return True
    return False


def mark(driver: WebDriver) -> None:
    """A flag that lives as long as the page: gone if it reloads."""
    driver.execute_script("window.__still_this_page = true;")


def same_page(driver: WebDriver) -> bool:
    return bool(driver.execute_script("return window.__still_this_page === true;"))


def api_status(api: ApiServer, key: str, execution_id: str) -> str:
    import httpx

    answer = httpx.get(f"{api.url}/v1/executions/{execution_id}", headers={"Authorization": f"Bearer {key}"})
    return str(answer.json()["status"])


def test_login_by_link_once_and_by_key(api: ApiServer, browser: WebDriver, tmp_path: Path) -> None:
    link = login_link(api, api.api_key, tmp_path / "home")
    browser.delete_all_cookies()
    browser.get(link)
    until(lambda: text_of(browser, "h1") == "Runs", "the runs page")
    browser.delete_all_cookies()
    browser.get(link)
    assert "used already or has expired" in text_of(browser, ".problem")
    browser.save_screenshot(str(tmp_path / "login.png"))
    browser.find_element(By.ID, "key").send_keys(api.api_key)
    browser.find_element(By.CSS_SELECTOR, ".login button").click()
    until(lambda: text_of(browser, "h1") == "Runs", "the runs page after the key form")
    assert "alice" in text_of(browser, ".who")


def test_a_run_appears_and_its_log_is_live(api: ApiServer, browser: WebDriver, tmp_path: Path) -> None:
    (tmp_path / "short.py").write_text("import time\ntime.sleep(2)\nprint('done')\n")
    (tmp_path / "ticks.py").write_text(
        "import sys, time\n"
        "for n in range(20):\n"
        "    print(f'tick {n}', flush=True)\n"
        "    if n % 5 == 0:\n"
        "        print(f'warn {n}', file=sys.stderr, flush=True)\n"
        "    time.sleep(0.25)\n"
    )
    log_in(browser, api, api.api_key, tmp_path / "home")
    run_id = submit(api, api.api_key, tmp_path / "home", tmp_path, "short.py")
    browser.get(f"{api.url}/ui/")
    until(lambda: "short.py" in text_of(browser, f"#row-{run_id}"), "the run in the list")
    assert "succeeded" not in text_of(browser, f"#row-{run_id} .badge")
    mark(browser)
    until(
        lambda: "succeeded" in text_of(browser, f"#row-{run_id} .badge"),
        "the row to update itself",
        timeout=90,
    )
    assert same_page(browser), "the list reloaded instead of updating the row"

    second = submit(api, api.api_key, tmp_path / "home", tmp_path, "ticks.py")
    browser.get(f"{api.url}/ui/runs/{second}")
    until(lambda: "tick 3" in text_of(browser, "#log"), "the first lines", timeout=90)
    mark(browser)
    shown_at_first = text_of(browser, "#log").count("tick ")
    until(lambda: "tick 15" in text_of(browser, "#log"), "lines written after the page loaded")
    assert same_page(browser), "the log came by reloading the page"
    assert text_of(browser, "#log").count("tick ") > shown_at_first
    assert "warn 10" in all_text(browser, "#log .stderr")
    assert "warn" not in all_text(browser, "#log .stdout")
    until(
        lambda: "tick 19" in text_of(browser, "#log") and text_of(browser, "#status") == "succeeded",
        "the end",
    )
    browser.save_screenshot(str(tmp_path / "run.png"))


def test_cancel_from_the_page(api: ApiServer, browser: WebDriver, tmp_path: Path) -> None:
    (tmp_path / "sleepy.py").write_text("import time\nprint('sleeping', flush=True)\ntime.sleep(300)\n")
    log_in(browser, api, api.api_key, tmp_path / "home")
    run_id = submit(api, api.api_key, tmp_path / "home", tmp_path, "sleepy.py")
    browser.get(f"{api.url}/ui/runs/{run_id}")
    until(lambda: "sleeping" in text_of(browser, "#log"), "the run to start", timeout=90)
    browser.find_element(By.CSS_SELECTOR, ".actions button.danger").click()
    browser.switch_to.alert.accept()  # "Cancel this run?"
    until(lambda: api_status(api, api.api_key, run_id) == "cancelled", "the run to be cancelled")
    until(lambda: text_of(browser, "#status") == "cancelled", "the page to say so")


def test_a_batch_moves_and_retry_failed_reruns_only_the_failed(
    api: ApiServer, browser: WebDriver, tmp_path: Path
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for n in range(8):
        (inputs / f"{'bad' if n < 2 else 'ok'}{n}.txt").write_text(str(n))
    (tmp_path / "each.py").write_text(
        "import sys, time\ntime.sleep(1.5)\nsys.exit(3 if 'bad' in sys.argv[1] else 0)\n"
    )
    log_in(browser, api, api.api_key, tmp_path / "home")
    done = subprocess.run(
        [*RGRID, "run", "-d", "--json", "--parallel", "2", "--batch", "inputs/*.txt", "each.py", "{}"],
        cwd=tmp_path,
        env=cli_env(api, api.api_key, tmp_path / "home"),
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    batch_id = json.loads(done.stdout)["id"]
    browser.get(f"{api.url}/ui/batches/{batch_id}")
    first = int(text_of(browser, "#progress-ended") or 0)
    assert first < 8
    mark(browser)
    until(
        lambda: int(text_of(browser, "#progress-ended") or 0) > first, "the progress bar to move", timeout=90
    )
    assert same_page(browser), "the progress came by reloading the page"
    browser.save_screenshot(str(tmp_path / "batch.png"))
    until(lambda: text_of(browser, "#batch-status") == "failed", "the batch to end", timeout=120)
    assert text_of(browser, "#count-failed") == "2" and text_of(browser, "#count-succeeded") == "6"
    until(lambda: click_button(browser, "Retry failed"), "the retry button")
    until(
        lambda: browser.current_url.rstrip("/") != f"{api.url}/ui/batches/{batch_id}", "the new batch's page"
    )
    assert "over 2 inputs" in text_of(browser, "main")
    assert set(texts_of(browser, "#runs .input")) == {"inputs/bad0.txt", "inputs/bad1.txt"}
    browser.get(f"{api.url}/ui/")
    browser.save_screenshot(str(tmp_path / "runs.png"))


def test_what_a_job_prints_stays_text_in_the_browser(
    api: ApiServer, browser: WebDriver, tmp_path: Path
) -> None:
    hostile = '<script>document.title="owned"</script><img src=x onerror="document.title=42">'
    (tmp_path / "xss.py").write_text(f"print({hostile!r})\n")
    log_in(browser, api, api.api_key, tmp_path / "home")
    run_id = submit(api, api.api_key, tmp_path / "home", tmp_path, "xss.py", hostile)
    browser.get(f"{api.url}/ui/runs/{run_id}")
    until(lambda: hostile in text_of(browser, "#log"), "the hostile line, as text", timeout=90)
    until(lambda: text_of(browser, "#status") == "succeeded", "the end")
    assert hostile in text_of(browser, "dl.facts")  # the argument, in the command line
    assert browser.execute_script("return document.querySelectorAll('main img, main script').length") == 0
    assert browser.title not in ("owned", "42")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018
    browser.get(f"{api.url}/ui/")
    assert browser.execute_script("return document.querySelectorAll('main img, main script').length") == 0
    assert browser.title not in ("owned", "42")


def test_another_owners_run_is_not_found(api: ApiServer, browser: WebDriver, tmp_path: Path) -> None:
    (tmp_path / "hi.py").write_text("print('hi')\n")
    theirs = submit(api, api.api_key, tmp_path / "home", tmp_path, "hi.py")
    log_in(browser, api, api.create_key("trudy"), tmp_path / "home-t")
    browser.get(f"{api.url}/ui/runs/{theirs}")
    shown = browser.find_element(By.TAG_NAME, "main").text
    missing = "z" * len(theirs)
    browser.get(f"{api.url}/ui/runs/{missing}")
    assert browser.find_element(By.TAG_NAME, "main").text.replace(missing, "ID") == shown.replace(
        theirs, "ID"
    )
    assert "hi.py" not in shown


def test_paging_through_ten_thousand_runs(api: ApiServer, browser: WebDriver, tmp_path: Path) -> None:
    key = api.create_key(f"pager{os.getpid()}")
    owner = f"pager{os.getpid()}"
    now = datetime.now(UTC)
    ids = [f"p{os.getpid() % 10000:04d}{n:05d}" for n in range(10_000)]  # ten characters, as ids are
    rows = [
        execution_row(
            execution_id,
            owner,
            Status.SUCCEEDED,
            # Every tenth run shares its creation time with the next: the
            # cursor must still neither skip nor repeat one.
            now - timedelta(seconds=10_000 - n + (n % 10 == 1)),
            script_name=f"job{n % 7}.py",
            exit_code=0,
            duration_s=1.0,
            started_at=now - timedelta(seconds=10_000 - n),
            finished_at=now - timedelta(seconds=9_999 - n),
        )
        for n, execution_id in enumerate(ids)
    ]
    with database(api) as engine, engine.begin() as conn:
        conn.execute(insert(Execution), rows)
    newest_first = sorted(rows, key=lambda r: (cast(datetime, r["created_at"]), str(r["id"])), reverse=True)
    expected = [str(r["id"]) for r in newest_first]
    log_in(browser, api, key, tmp_path / "home")
    browser.get(f"{api.url}/ui/?limit=500")
    seen: list[str] = []
    for _ in range(25):
        seen += ids_shown(browser)
        older = browser.find_elements(By.CSS_SELECTOR, ".pages a[rel=next]")
        if not older:
            break
        older[0].click()
    assert seen == expected
    browser.get(f"{api.url}/ui/?script=job3.py&limit=500")
    shown = ids_shown(browser)
    script_of = {str(r["id"]): str(r["script_name"]) for r in rows}
    assert shown == [i for i in expected if script_of[i] == "job3.py"][:500]


def test_cost_and_grid_pages(api: ApiServer, browser: WebDriver, tmp_path: Path) -> None:
    log_in(browser, api, api.api_key, tmp_path / "home")
    browser.get(f"{api.url}/ui/cost")
    assert text_of(browser, "h1") == "Cost"
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")) == 30
    browser.save_screenshot(str(tmp_path / "cost.png"))
    browser.get(f"{api.url}/ui/grid")
    assert text_of(browser, "h1") == "Grid"
    assert browser.find_elements(By.CSS_SELECTOR, "table.nodes")
    browser.save_screenshot(str(tmp_path / "grid.png"))
    log_in(browser, api, api.create_key("plainuser"), tmp_path / "home-p")
    assert not [a for a in browser.find_elements(By.CSS_SELECTOR, "header nav a") if a.text == "Grid"]
    browser.get(f"{api.url}/ui/grid")
    assert "needs an admin key" in browser.find_element(By.TAG_NAME, "main").text
