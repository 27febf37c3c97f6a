"""The dashboard's pages in a real browser (headless Chromium from Debian's packages, driven
by Selenium through Debian's chromedriver) against a real worker: a task appears and succeeds
live, a queued task is revoked from its page, a running one terminated, a pipeline run's DAG
changes colour as its steps finish, workers are resized and shut down, runs are submitted,
cancelled and retried from forms, and with --auth the pages need a login.

Skipped (saying why) only where chromium or chromedriver is not installed; .ci/run installs
them. With RUNNER_DASHBOARD_SCREENSHOTS=DIR the tests save the README's screenshots there.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.dashboard_fixtures import Harness, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="browser tests need Debian's chromium and chromium-driver "
                              "(apt-get install chromium chromium-driver; .ci/run installs "
                              "them)"),
    pytest.mark.xdist_group("dashboard-browser"),  # (one browser, worker and server for all)
]

SHOTS = os.environ.get("RUNNER_DASHBOARD_SCREENSHOTS")
PIPELINE = """\
name: nightly-report
description: Load each region, total them, publish the report.
app: pipeline_tasks
params:
  delay: {type: float, default: 1.5}
  regions: {type: list, default: [north, south, east]}
  api_key: {type: str, default: none, secret: true}
steps:
  load:
    task: pipeline_tasks.sleep
    map: "{{ params.regions }}"
    args: ["{{ params.delay }}", "{{ item }}"]
  total:
    task: pipeline_tasks.echo
    needs: [load]
    args: ["{{ steps.load.result }}"]
  publish:
    task: pipeline_tasks.sleep
    needs: [total]
    args: ["{{ params.delay }}", "published"]
  audit:
    task: pipeline_tasks.echo
    needs: [load]
    args: [audited]
triggers:
  - cron: "0 3 * * *"
    timezone: Europe/Oslo
"""


def shot(driver, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        time.sleep(0.3)
        driver.save_screenshot(str(Path(SHOTS) / f"dashboard-{name}.png"))


@pytest.fixture(scope="module")
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,860", "--disable-extensions"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipelines")
    (folder / "nightly_report.yaml").write_text(PIPELINE)
    harness = Harness(tmp_path_factory.mktemp("browser"), pipelines=str(folder))
    harness.worker("-c", "3", "-n", "alpha@%h")
    harness.seen_worker("alpha@")
    yield harness
    harness.close()


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def wait_css(driver, selector: str, timeout: float = 25.0, what: str | None = None):
    return wait_until(lambda: css(driver, selector), timeout, what or selector)[0]


def text_of(driver, selector: str) -> str:
    """(By script, in one step: the live part is swapped in every half second, so an element
    found by one call may be gone by the next.)"""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
        selector)


def attribute(driver, selector: str, name: str) -> str | None:
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]);"
        "return e ? e.getAttribute(arguments[1]) : null;", selector, name)


def click(driver, selector: str) -> None:
    wait_css(driver, selector)
    driver.execute_script("document.querySelector(arguments[0]).click();", selector)


def open_page(driver, board, path: str) -> None:
    driver.get(board.url(path))
    driver.execute_script("window.notReloaded = true;")


def known(board, task_id: str) -> None:
    """The dashboard has heard of the task (its task-sent event came)."""
    wait_until(lambda: board.http.get(f"/api/tasks/{task_id}").status_code == 200,
               what=f"task {task_id} known")


def not_reloaded(driver) -> bool:
    return driver.execute_script("return window.notReloaded === true;")


def test_a_task_appears_and_succeeds_live(driver, board):
    import pipeline_tasks

    open_page(driver, board, "/tasks")
    sent = pipeline_tasks.sleep.delay(1.5, "live")
    wait_css(driver, f'tr[data-task="{sent.id}"][data-state="STARTED"]',
             what="the task STARTED on the open page")
    wait_css(driver, f'tr[data-task="{sent.id}"][data-state="SUCCESS"]',
             what="the task SUCCESS on the open page")
    assert not_reloaded(driver)  # the live part was swapped in, the page stayed
    row = text_of(driver, f'tr[data-task="{sent.id}"]')
    assert "pipeline_tasks.sleep" in row and "'live'" in row and "alpha@" in row
    click(driver, f'tr[data-task="{sent.id}"] a')
    wait_css(driver, "#task-facts")
    assert "SUCCESS" in text_of(driver, "#task-state")
    assert text_of(driver, "#task-result") == "'live'"
    shot(driver, "task")


def test_filters_narrow_the_task_list(driver, board):
    import pipeline_tasks

    failed = pipeline_tasks.fail.delay("filtered out?")
    ok = pipeline_tasks.echo.delay("kept")
    ok.get(timeout=20)
    open_page(driver, board, "/tasks")
    wait_css(driver, f'tr[data-task="{failed.id}"][data-state="FAILURE"]')
    from selenium.webdriver.support.select import Select

    Select(wait_css(driver, 'select[name="state"]')).select_by_visible_text("FAILURE")
    click(driver, '#task-filters button[type="submit"]')
    wait_until(lambda: "state=FAILURE" in driver.current_url, what="the filtered URL")
    wait_css(driver, f'tr[data-task="{failed.id}"]')
    assert not css(driver, f'tr[data-task="{ok.id}"]')
    assert driver.execute_script(
        "return [...document.querySelectorAll('tr[data-task]')].every("
        "r => r.dataset.state === 'FAILURE');")


def test_revoke_a_queued_task_from_its_page_then_the_worker_skips_it(driver, board):
    import pipeline_tasks

    parked = pipeline_tasks.echo.apply_async(("never",), queue="parked")
    known(board, parked.id)
    open_page(driver, board, f"/tasks/{parked.id}")
    wait_css(driver, "#task-state")
    assert "PENDING" in text_of(driver, "#task-state")  # (sent; no worker consumes it)
    click(driver, '#task-actions form[action$="/revoke"] button')
    assert "revoke sent" in wait_css(driver, "#msg").text
    # now let the worker consume the queue, from the workers page
    open_page(driver, board, "/workers")
    row = 'tr[data-worker^="alpha@"]'
    wait_css(driver, f'{row} input[name="queue"]')
    driver.execute_script("document.querySelector(arguments[0]).value = 'parked';",
                          f'{row} input[name="queue"]')
    click(driver, f'{row} form[action$="/add_consumer"] button:not([formaction])')
    assert "add consumer parked" in wait_css(driver, "#msg").text
    wait_until(lambda: "parked" in text_of(driver, row), what="parked among its queues")
    open_page(driver, board, f"/tasks/{parked.id}")
    wait_until(lambda: "REVOKED" in text_of(driver, "#task-state"), what="REVOKED")
    assert parked.state == "REVOKED"


def test_terminate_a_running_task_and_apply_it_again(driver, board):
    import pipeline_tasks

    long = pipeline_tasks.sleep.delay(60, "long")
    known(board, long.id)
    open_page(driver, board, f"/tasks/{long.id}")
    wait_until(lambda: "STARTED" in text_of(driver, "#task-state"), what="STARTED")
    driver.execute_script("window.confirm = function () { return true; };")
    click(driver, '#task-actions form[action$="/terminate"] button')
    wait_css(driver, "#msg")
    wait_until(lambda: "REVOKED" in text_of(driver, "#task-state"), what="terminated")
    click(driver, '#task-actions form[action$="/apply"] button')
    message = wait_css(driver, "#msg").text
    assert message.startswith("sent pipeline_tasks.sleep again as task ")
    again = message.rsplit(" ", 1)[-1]
    pipeline_tasks.app.control.revoke(again, terminate=True)  # (not a minute of the worker)


def test_a_run_submitted_from_its_form_draws_a_dag_that_changes_colour(driver, board):
    open_page(driver, board, "/runs")
    click(driver, 'a[href="/pipelines/nightly-report"]')
    form = wait_css(driver, "#submit-form")
    secret = css(driver, 'input[name="param.api_key"]')[0]
    assert secret.get_attribute("type") == "password"
    secret.send_keys("hunter2")
    css(driver, 'input[name="param.delay"]')[0].send_keys("3")
    shot(driver, "submit")
    form.submit()
    wait_until(lambda: "/runs/" in driver.current_url, what="the run's page")
    driver.execute_script("window.notReloaded = true;")

    def fill(step: str) -> tuple[str, str]:
        box = f'#dag g[data-step="{step}"]'
        return attribute(driver, box, "data-state") or "", \
            attribute(driver, f"{box} rect", "fill") or ""

    from runner.dashboard.dag import COLOURS

    wait_until(lambda: fill("load")[0] == "running", what="load running (yellow)")
    assert fill("load")[1] == COLOURS["running"][0] and fill("publish")[0] == "pending"
    assert re.search(r"running [0-2]/3", driver.execute_script(
        "return document.querySelector('#dag g[data-step=\"load\"]').textContent;"))
    shot(driver, "run")
    wait_until(lambda: fill("publish")[0] == "running", what="publish running")
    assert fill("load") == ("success", COLOURS["success"][0])
    assert fill("total") == ("success", COLOURS["success"][0])
    wait_until(lambda: fill("publish")[0] == "success", what="publish success (green)")
    assert not_reloaded(driver)
    assert "hunter2" not in driver.page_source  # secret params are masked
    assert '"api_key": "***"' in text_of(driver, "#run-params")
    wait_css(driver, '#run-state .s-success')


def test_cancel_a_run_then_retry_it(driver, board):
    from runner.pipeline import engine
    from runner.pipeline.validate import load_pipeline

    loaded = load_pipeline(Path(board.options.pipelines) / "nightly_report.yaml")
    run = engine.submit(board.app, loaded, {"delay": 3})
    open_page(driver, board, f"/runs/{run.id}")
    wait_until(lambda: css(driver, '#dag g[data-step="load"][data-state="running"]'),
               what="load running")
    driver.execute_script("window.confirm = function () { return true; };")
    click(driver, 'form[action$="/cancel"] button')
    wait_css(driver, "#msg")
    wait_css(driver, "#run-state .s-cancelled")
    wait_css(driver, '#dag g[data-step="publish"][data-state="cancelled"]')
    click(driver, 'form[action$="/retry"] button')
    assert "attempt 2" in wait_css(driver, "#msg").text
    wait_css(driver, "#run-state .s-success", timeout=40)


def test_runs_queues_and_triggers_pages(driver, board):
    from runner.pipeline import engine
    from runner.pipeline.validate import load_pipeline

    loaded = load_pipeline(Path(board.options.pipelines) / "nightly_report.yaml")
    engine.submit(board.app, loaded, {"delay": 0.1})
    open_page(driver, board, "/runs")
    wait_css(driver, 'tr[data-run][data-state="success"]')
    shot(driver, "runs")
    open_page(driver, board, "/queues")
    wait_css(driver, 'tr[data-queue="celery"]')
    assert "alpha@" in text_of(driver, 'tr[data-queue="celery"]')
    shot(driver, "queues")
    open_page(driver, board, "/triggers")
    wait_css(driver, 'tr[data-entry="nightly-report"]')
    entry = text_of(driver, 'tr[data-entry="nightly-report"]')
    assert "Europe/Oslo" in entry and "03:00:00" in entry
    assert "no beat holds the lease" in text_of(driver, "#leader")
    shot(driver, "triggers")
    open_page(driver, board, "/tasks")
    wait_css(driver, "tr[data-task]")
    shot(driver, "tasks")


def test_grow_the_pool_and_shut_a_worker_down_from_the_workers_page(driver, board):
    board.worker("-c", "1", "-n", "beta@%h")
    board.seen_worker("beta@")
    open_page(driver, board, "/workers")
    row = 'tr[data-worker^="beta@"]'
    wait_css(driver, row)
    click(driver, f'{row} form[action$="/pool_grow"] button')
    assert "pool will grow" in wait_css(driver, "#msg").text
    wait_until(lambda: "× 2" in text_of(driver, row), what="a pool of 2")
    click(driver, f'{row} form[action$="/pool_shrink"] button')
    wait_until(lambda: "× 1" in text_of(driver, row), what="a pool of 1 again")
    for action, present in (("add_consumer", True), ("cancel_consumer", False)):
        driver.execute_script("document.querySelector(arguments[0]).value = 'extra';",
                              f'{row} input[name="queue"]')
        button = ('button:not([formaction])' if action == "add_consumer" else
                  'button[formaction$="/cancel_consumer"]')
        click(driver, f'{row} form[action$="/add_consumer"] {button}')
        wait_until(lambda: ("extra" in text_of(driver, row)) == present,  # noqa: B023
                   what=f"{action} shown")
    shot(driver, "workers")
    driver.execute_script("window.confirm = function () { return true; };")
    click(driver, f'{row} form[action$="/shutdown"] button')
    assert "shutdown sent" in wait_css(driver, "#msg").text
    wait_until(lambda: "offline" in text_of(driver, row), what="beta offline")
    assert board.workers[-1].proc.wait(20) == 0


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    harness = Harness(tmp_path_factory.mktemp("locked"), auth="ann:pa55 word")
    yield harness
    harness.close()


def test_log_in_when_auth_is_on(driver, locked):
    driver.delete_all_cookies()
    driver.get(locked.url("/tasks"))
    wait_css(driver, "#login-form")
    assert "/login" in driver.current_url
    wait_css(driver, 'input[name="user"]').send_keys("ann")
    css(driver, 'input[name="password"]')[0].send_keys("wrong")
    css(driver, "#login-form")[0].submit()
    wait_css(driver, "#login-failed")
    css(driver, 'input[name="user"]')[0].send_keys("ann")
    css(driver, 'input[name="password"]')[0].send_keys("pa55 word")
    css(driver, "#login-form")[0].submit()
    wait_until(lambda: driver.current_url.endswith("/tasks"), what="the tasks page")
    wait_css(driver, "#tasks")
    click(driver, "#logout")
    wait_css(driver, "#login-form")
    driver.get(locked.url("/workers"))
    wait_css(driver, "#login-form")
