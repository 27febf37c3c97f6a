"""``runner dashboard``'s HTTP side against a real worker and a real server (SQLite): the JSON
API and the pages agree with what the worker did, actions act, bad input gets a 4xx with a
message (never a 500), POSTs need a CSRF proof, and with --auth/--token nothing is shown
without credentials. (The pages in a browser: tests/test_dashboard_browser.py.)"""

from __future__ import annotations

import base64
import subprocess
import sys
import time

import pytest

from tests.dashboard_fixtures import Harness, free_port, wait_until

XHR = {"X-Requested-With": "test"}
pytestmark = pytest.mark.xdist_group("dashboard-http")  # (one worker and server for all)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    harness = Harness(tmp_path_factory.mktemp("dashboard"),
                      pipelines=str(tmp_path_factory.mktemp("pipelines")))
    harness.worker("-c", "2", "-n", "dash@%h")
    harness.seen_worker("dash@")
    yield harness
    harness.close()


def task_seen(board, task_id: str, state: str) -> dict:
    def check():
        found = board.http.get(f"/api/tasks/{task_id}")
        return found.json() if found.status_code == 200 and found.json()["state"] == state \
            else None

    return wait_until(check, what=f"task {task_id} {state}")


def test_a_task_shows_in_the_api_and_on_the_pages_as_the_worker_ran_it(board):
    import pipeline_tasks

    ok = pipeline_tasks.echo.delay({"a": 1}, label="api")
    bad = pipeline_tasks.fail.delay("no way")
    assert ok.get(timeout=20) == {"a": 1}
    task = task_seen(board, ok.id, "SUCCESS")
    assert task["name"] == "pipeline_tasks.echo" and task["worker"].startswith("dash@")
    assert task["result"] == "{'a': 1}" and task["queue"] == "celery"
    assert task["kwargs"] == "{'label': 'api'}" and task["runtime"] >= 0
    failed = task_seen(board, bad.id, "FAILURE")
    assert "no way" in failed["exception"] and "Traceback" in failed["traceback"]

    listed = board.http.get("/api/tasks", params={"state": "FAILURE"}).json()
    assert [t["id"] for t in listed["tasks"]] == [bad.id] and listed["total"] == 1
    by_name = board.http.get("/api/tasks", params={"name": "pipeline_tasks.echo",
                                                   "search": ok.id[:8]}).json()
    assert [t["id"] for t in by_name["tasks"]] == [ok.id]
    later = board.http.get("/api/tasks", params={"since": time.time() + 60}).json()
    assert later["total"] == 0

    first = board.http.get("/tasks?state=FAILURE&limit=1&offset=0").text  # paging
    assert 'id="page-newer"' not in first and 'id="page-older"' not in first
    top = board.http.get("/tasks?limit=1").text
    older = top.split('id="page-older"', 1)[0].rsplit('href="', 1)[1].split('"', 1)[0]
    assert older == "/tasks?limit=1&amp;offset=1"
    assert 'id="page-newer"' in board.http.get(older.replace("&amp;", "&")).text
    page = board.http.get(f"/tasks/{bad.id}")
    assert page.status_code == 200 and "no way" in page.text and "Traceback" in page.text
    assert f'title="{bad.id}">{bad.id[:8]}…{bad.id[-16:]}</a>' in \
        board.http.get("/tasks?state=FAILURE").text
    me = wait_until(lambda: (lambda w: w if w["processed"] >= 2 else None)(
        board.seen_worker("dash@")), what="the next heartbeat's count")  # (sent each 1s)
    assert me["failed"] >= 1 and me["queues"] == ["celery"]
    assert me["pool"] == "prefork" and me["concurrency"] == 2


def test_ids_that_differ_at_the_end_look_different_on_the_tasks_page(board):
    """A pipeline run's task ids share their start: the list shows their ends."""
    import pipeline_tasks

    ids = ["20261206T204712-ab12cd-extract-0", "20261206T204712-ab12cd-total"]
    for task_id in ids:
        pipeline_tasks.echo.apply_async(("same start",), task_id=task_id).get(timeout=20)
        task_seen(board, task_id, "SUCCESS")
    page = board.http.get("/tasks", params={"search": "20261206T204712-ab12cd"}).text
    shown = [page.split(f'title="{task_id}">', 1)[1].split("</a>", 1)[0] for task_id in ids]
    assert shown == ["20261206…ab12cd-extract-0", "20261206…712-ab12cd-total"]


def test_a_task_page_links_parent_and_children(board):
    import pipeline_tasks

    from runner import chain

    last = chain(pipeline_tasks.echo.s(1), pipeline_tasks.echo.s()).delay()
    assert last.get(timeout=20) == 1
    first_id = last.parent.id
    child = task_seen(board, last.id, "SUCCESS")
    assert child["parent_id"] == first_id
    parent = task_seen(board, first_id, "SUCCESS")
    assert [c["id"] for c in parent["children"]] == [last.id]
    page = board.http.get(f"/tasks/{first_id}").text
    assert f'href="/tasks/{last.id}"' in page
    assert f'href="/tasks/{first_id}"' in board.http.get(f"/tasks/{last.id}").text


def test_queues_show_waiting_messages_and_their_consumers(board):
    import pipeline_tasks

    pipeline_tasks.echo.apply_async(("parked",), queue="parked")

    def parked():
        rows = {q["name"]: q for q in board.http.get("/api/queues").json()["queues"]}
        return rows.get("parked") if rows.get("parked", {}).get("waiting") == 1 else None

    row = wait_until(parked, what="queue parked with 1 waiting")
    assert row["consumers"] == [] and row["rate_in"] > 0
    celery = {q["name"]: q for q in board.http.get("/api/queues").json()["queues"]}["celery"]
    assert celery["consumers"][0].startswith("dash@")
    assert 'data-queue="parked"' in board.http.get("/queues").text


def test_pool_and_consumer_actions_change_the_worker(board):
    name = board.seen_worker("dash@")["hostname"]
    grown = board.http.post(f"/api/workers/{name}/pool_grow", json={"n": 1}, headers=XHR)
    assert grown.status_code == 200 and "grow" in grown.json()["ok"]
    wait_until(lambda: board.seen_worker("dash@")["concurrency"] == 3, what="pool of 3")
    shrunk = board.http.post(f"/api/workers/{name}/pool_shrink", json={"n": 1}, headers=XHR)
    assert shrunk.status_code == 200
    wait_until(lambda: board.seen_worker("dash@")["concurrency"] == 2, what="pool of 2")
    too_far = board.http.post(f"/api/workers/{name}/pool_shrink", json={"n": 5}, headers=XHR)
    assert too_far.status_code == 409 and "at least 1" in too_far.json()["error"]

    added = board.http.post(f"/api/workers/{name}/add_consumer", json={"queue": "extra"},
                            headers=XHR)
    assert added.status_code == 200
    wait_until(lambda: "extra" in board.seen_worker("dash@")["queues"], what="consumer added")
    board.http.post(f"/api/workers/{name}/cancel_consumer", json={"queue": "extra"},
                    headers=XHR)
    wait_until(lambda: "extra" not in board.seen_worker("dash@")["queues"],
               what="consumer cancelled")


def test_apply_again_sends_the_same_task_with_the_same_arguments(board):
    import pipeline_tasks

    first = pipeline_tasks.echo.delay([1, 2], label="again")
    first.get(timeout=20)
    task_seen(board, first.id, "SUCCESS")
    answer = board.http.post(f"/api/tasks/{first.id}/apply", headers=XHR)
    assert answer.status_code == 200, answer.text
    new_id = answer.json()["ok"].rsplit(" ", 1)[-1]
    again = task_seen(board, new_id, "SUCCESS")
    assert again["result"] == "[1, 2]" and again["kwargs"] == "{'label': 'again'}"


def test_a_pipeline_run_its_dag_and_a_submit_with_params(board):
    folder = board.options.pipelines
    with open(f"{folder}/two.yaml", "w") as out:
        out.write("name: two\napp: pipeline_tasks\nparams:\n  word: {type: str, default: hi}\n"
                  "  pin: {type: str, default: '0000', secret: true}\n"
                  "steps:\n  first: {task: pipeline_tasks.echo, args: ['{{ params.word }}']}\n"
                  "  second: {task: pipeline_tasks.echo, args: ['{{ steps.first.result }}!'], "
                  "needs: [first]}\n")
    form = board.http.get("/api/pipelines/two").json()
    assert form["params"]["pin"] == {"type": "str", "required": False, "secret": True,
                                     "description": None, "default": None}
    answer = board.http.post("/api/pipelines/two/runs", headers=XHR,
                             json={"params": {"word": "hello", "pin": "4321"}})
    assert answer.status_code == 200, answer.text
    run_id = answer.json()["run_id"]
    run = wait_until(lambda: (lambda r: r if r["state"] == "success" else None)(
        board.http.get(f"/api/runs/{run_id}").json()), what="run success")
    assert run["steps"]["second"]["result"] == '"hello!"'
    assert run["steps"]["second"]["needs"] == ["first"]
    assert run["params"] == {"word": "hello", "pin": "***"}  # a secret is never shown
    page = board.http.get(f"/runs/{run_id}").text
    assert "4321" not in page and 'data-step="second" data-state="success"' in page
    svg = board.http.get(f"/api/runs/{run_id}/dag.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text.count('class="step state-success"') == 2 and 'class="edge"' in svg.text
    listed = board.http.get("/api/runs", params={"pipeline": "two"}).json()
    assert [r["id"] for r in listed["runs"]] == [run_id]
    again = board.http.post(f"/api/runs/{run_id}/retry", headers=XHR)
    assert again.status_code == 409 and "nothing to retry" in again.json()["error"]
    bad = board.http.post("/api/pipelines/two/runs", headers=XHR,
                          json={"params": {"nope": "1"}})
    assert bad.status_code == 400 and "no param 'nope'" in bad.json()["error"]


def test_the_runs_list_counts_every_step_skipped_ones_too(board):
    folder = board.options.pipelines
    with open(f"{folder}/skips.yaml", "w") as out:
        out.write("name: skips\napp: pipeline_tasks\nsteps:\n"
                  "  one: {task: pipeline_tasks.echo, args: [1]}\n"
                  "  two: {task: pipeline_tasks.echo, args: [2], needs: [one]}\n"
                  "  never: {task: pipeline_tasks.echo, args: [3], when: '{{ 1 > 2 }}'}\n"
                  "  after: {task: pipeline_tasks.echo, args: [4], needs: [never]}\n")
    answer = board.http.post("/api/pipelines/skips/runs", headers=XHR, json={})
    assert answer.status_code == 200, answer.text
    run_id = answer.json()["run_id"]
    first = board.http.get("/api/runs", params={"pipeline": "skips"}).json()["runs"]
    assert [r["id"] for r in first] == [run_id]  # (read, and kept decoded, while it runs...)
    wait_until(lambda: board.http.get("/api/runs", params={"pipeline": "skips"}).json()[
        "runs"][0]["state"] in ("success", "failed"), what="the list showing the run done")
    listed = board.http.get("/api/runs", params={"pipeline": "skips"}).json()["runs"]
    assert listed[0]["steps"]["success"] == 2 and listed[0]["steps"]["skipped"] == 2
    assert sum(listed[0]["steps"].values()) == 4
    row = board.http.get("/runs?pipeline=skips").text.split(f'data-run="{run_id}"', 1)[1]
    assert '<span class="badge s-skipped">skipped</span>&nbsp;2' in row.split("</tr>", 1)[0]


def test_triggers_show_next_fires_in_their_zone(board):
    folder = board.options.pipelines
    with open(f"{folder}/nightly.yaml", "w") as out:
        out.write("name: nightly\napp: pipeline_tasks\nsteps:\n  one: {task: "
                  "pipeline_tasks.echo, args: [1]}\ntriggers:\n  - cron: '0 3 * * *'\n"
                  "    timezone: Europe/Oslo\n")
    shown = board.http.get("/api/triggers").json()
    entry = next(e for e in shown["entries"] if e["name"] == "nightly")
    assert entry["timezone"] == "Europe/Oslo" and len(entry["next"]) == 3
    assert all(t[11:19] == "03:00:00" and t.endswith(("+01:00", "+02:00"))
               for t in entry["next"])
    assert shown["leader"] is None
    assert 'data-entry="nightly"' in board.http.get("/triggers").text


def test_a_beat_fire_shows_as_the_last_fire_and_its_leader(board):
    from runner.beat.entries import build_entries
    from runner.beat.scheduler import Beat

    folder = board.options.pipelines
    with open(f"{folder}/often.yaml", "w") as out:
        out.write("name: often\napp: pipeline_tasks\nsteps:\n  one: {task: "
                  "pipeline_tasks.echo, args: [1]}\ntriggers:\n  - every: 10s\n")
    now = [time.time()]
    beat = Beat(board.app, build_entries(board.app, folder), owner="beat-one",
                clock=lambda: now[0], lease_seconds=60)
    beat.tick()  # (leads; the entry's timeline starts now)
    now[0] = (now[0] // 10 + 1) * 10 + 0.5  # just past the next multiple of 10 s
    beat.tick()  # one fire due: a run submitted
    shown = board.http.get("/api/triggers").json()
    assert shown["leader"]["owner"] == "beat-one"
    entry = next(e for e in shown["entries"] if e["name"] == "often")
    assert len(entry["last"]) == 1 and entry["last"][0]["error"] is None
    run_id = entry["last"][0]["id"]
    assert board.http.get(f"/api/runs/{run_id}").json()["pipeline"] == "often"
    page = board.http.get("/triggers").text
    assert f'href="/runs/{run_id}"' in page and "beat-one" in page
    wait_until(lambda: 'runner_beat_fires_total{entry="often"} 1.0' in
               board.http.get("/metrics").text, what="the beat-fired event counted")
    beat.release()


def test_metrics_in_prometheus_format(board):
    import pipeline_tasks

    from runner.pipeline import engine
    from runner.pipeline.validate import load_pipeline_text

    pipeline_tasks.echo.delay("m").get(timeout=20)
    metered = load_pipeline_text("name: metered\napp: pipeline_tasks\nsteps:\n  one: {task: "
                                 "pipeline_tasks.echo, args: [1]}\n")
    run_id = engine.submit(board.app, metered, {}).id
    wait_until(lambda: board.http.get(f"/api/runs/{run_id}").json()["state"] == "success",
               what="run success")
    text = board.http.get("/metrics").text
    for line in ('runner_tasks_total{name="pipeline_tasks.echo",state="SUCCESS"}',
                 'runner_task_runtime_seconds_bucket{le="0.005",name="pipeline_tasks.echo"}',
                 "runner_workers_up 1.0", 'runner_queue_messages{queue="celery",state=',
                 'runner_pipeline_runs{pipeline="metered",state="success"} 1.0'):
        assert line in text, line


def test_the_openapi_spec_names_every_api_route(board):
    from runner.dashboard import api

    spec = board.http.get("/api/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    documented = set(spec["paths"])
    served = {route.path for route in api.ROUTES if route.path != "/api/openapi.json"}
    assert served == documented
    schemas = spec["components"]["schemas"]
    bodies = {path: ops["post"]["requestBody"]["content"]["application/json"]["schema"]
              for path, ops in spec["paths"].items() if "post" in ops}
    assert len(bodies) == 4
    named = {path: [ref["$ref"].rsplit("/", 1)[1] for ref in body.get("oneOf", [body])]
             for path, body in bodies.items()}
    assert named["/api/workers/{hostname}/{action}"] == ["PoolChange", "QueueName", "NoBody"]
    assert schemas["PoolChange"]["properties"]["n"]["type"] == "integer"
    assert schemas["SubmitForm"]["properties"]["params"]["type"] == "object"
    assert named["/api/runs/{run_id}/{action}"] == ["NoBody"]


@pytest.mark.parametrize("path, status, says", [
    ("/api/tasks?limit=100000", 400, "limit"),
    ("/api/tasks?state=DONE", 400, "state"),
    ("/api/tasks?since=yesterday", 400, "since"),
    ("/api/tasks?since=nan", 400, "since"),
    ("/api/tasks?until=inf", 400, "until"),
    ("/api/tasks?since=-Infinity", 400, "since"),
    ("/api/tasks?offset=-1", 400, "offset"),
    ("/api/tasks?colour=red", 400, "colour"),
    ("/api/tasks/no-such-task", 404, "no task"),
    ("/api/runs/no-such-run", 404, "no run"),
    ("/api/runs/../../etc/passwd", 404, ""),
    ("/api/runs?state=sleeping", 400, "state"),
    ("/api/pipelines/nope", 404, "no pipeline"),
    ("/tasks?limit=abc", 400, "limit"),
    ("/runs/no-such-run", 404, "no run"),
    ("/tasks/" + "x" * 5000, 404, "no task"),
])
def test_bad_input_is_a_4xx_with_a_message(board, path, status, says):
    answer = board.http.get(path)
    assert answer.status_code == status
    assert says in answer.text and "Traceback" not in answer.text


@pytest.mark.parametrize("path, body, status", [
    ("/api/workers/nobody@nowhere/shutdown", {}, 404),
    ("/api/workers/nobody@nowhere/explode", {}, 404),
    ("/api/tasks/x/explode", {}, 404),
    ("/api/runs/nope/retry", {}, 404),
    ("/api/runs/nope/explode", {}, 404),
    ("/api/tasks/nope/apply", {}, 404),
])
def test_bad_actions_are_refused_with_a_message(board, path, body, status):
    answer = board.http.post(path, json=body, headers=XHR)
    assert answer.status_code == status and answer.json()["error"]


def test_malformed_post_bodies_are_400(board):
    name = board.seen_worker("dash@")["hostname"]
    for body, kind in ((b"{not json", "application/json"), (b"[1, 2]", "application/json"),
                       (b'{"n": "many"}', "application/json"), (b'{"n": 10**9}',
                                                                 "application/json")):
        answer = board.http.post(f"/api/workers/{name}/pool_grow", content=body,
                                 headers={**XHR, "content-type": kind})
        assert answer.status_code == 400, (body, answer.text)
    huge = board.http.post(f"/api/workers/{name}/pool_grow", content=b"x" * 100_000,
                           headers={**XHR, "content-type": "application/json"})
    assert huge.status_code == 413


FORM_KIND = {**XHR, "content-type": "application/x-www-form-urlencoded"}  # (curl -d's)


def pool_size(board, name: str) -> int:
    """The worker's pool size now, as its refusal to shrink by 1000 says it."""
    refused = board.http.post(f"/api/workers/{name}/pool_shrink", json={"n": 1000},
                              headers=XHR)
    assert refused.status_code == 409, refused.text
    return int(refused.json()["error"].split("pool of ", 1)[1].split(" ", 1)[0])


def test_a_json_body_sent_as_curl_sends_it_is_read_as_json(board):
    """curl -d sends JSON with the form content type: the body counts, the answer is JSON."""
    name = board.seen_worker("dash@")["hostname"]
    before = pool_size(board, name)
    grown = board.http.post(f"/api/workers/{name}/pool_grow", content=b'{"n": 2}',
                            headers=FORM_KIND)
    assert grown.status_code == 200 and "grow" in grown.json()["ok"], grown.text
    assert pool_size(board, name) == before + 2
    shrunk = board.http.post(f"/api/workers/{name}/pool_shrink", data={"n": "2"},
                             headers=XHR)  # (a real form, from a script: JSON back)
    assert shrunk.status_code == 200 and "shrink" in shrunk.json()["ok"], shrunk.text
    assert pool_size(board, name) == before

    folder = board.options.pipelines
    with open(f"{folder}/greet.yaml", "w") as out:
        out.write("name: greet\napp: pipeline_tasks\nparams:\n  word: {type: str, default: "
                  "hi}\nsteps:\n  say: {task: pipeline_tasks.echo, args: ['{{ params.word }}']}\n")
    answer = board.http.post("/api/pipelines/greet/runs", headers=FORM_KIND,
                             content=b'{"params": {"word": "bonjour"}}')
    assert answer.status_code == 200, answer.text
    run = board.http.get(f"/api/runs/{answer.json()['run_id']}").json()
    assert run["params"] == {"word": "bonjour"}


@pytest.mark.parametrize("path, body", [
    ("pool_grow", b'{"n": "two"}'), ("pool_grow", b"not json"), ("pool_grow", b'{"m": 2}'),
    ("pool_grow", b"n"), ("pool_grow", b'["n", 2]'), ("shutdown", b'{"now": true}'),
    ("add_consumer", b'{"queue": 3}'),
])
def test_a_bad_body_is_a_400_and_nothing_is_done(board, path, body):
    name = board.seen_worker("dash@")["hostname"]
    before = pool_size(board, name)
    for headers in (FORM_KIND, {**XHR, "content-type": "application/json"}):
        answer = board.http.post(f"/api/workers/{name}/{path}", content=body, headers=headers)
        assert answer.status_code == 400, (body, answer.status_code, answer.text)
        assert answer.json()["error"], answer.text
    assert pool_size(board, name) == before
    assert board.seen_worker("dash@")["hostname"] == name  # (not shut down)


def test_a_bad_submit_body_starts_no_run(board):
    folder = board.options.pipelines
    with open(f"{folder}/nobad.yaml", "w") as out:
        out.write("name: nobad\napp: pipeline_tasks\nsteps:\n  one: {task: "
                  "pipeline_tasks.echo, args: [1]}\n")
    for body, says in ((b'{"param": {"x": "1"}}', "param: Extra inputs"),
                       (b"not json", "Content-Type: application/json"),
                       (b'{"params": ["x"]}', "params: Input should be a valid dictionary")):
        answer = board.http.post("/api/pipelines/nobad/runs", content=body, headers=FORM_KIND)
        assert answer.status_code == 400 and says in answer.json()["error"], answer.text
    assert board.http.get("/api/runs", params={"pipeline": "nobad"}).json()["runs"] == []


def test_on_127_0_0_1_another_host_name_is_refused(board):
    """(DNS rebinding: a site's name resolved to 127.0.0.1 reads nothing.)"""
    answer = board.http.get("/api/workers", headers={"Host": "evil.example"})
    assert answer.status_code == 400
    assert board.http.get("/api/workers", headers={"Host": "localhost:1"}).status_code == 200


def test_a_post_without_a_csrf_proof_is_refused(board):
    import pipeline_tasks

    sent = pipeline_tasks.echo.delay("csrf")
    sent.get(timeout=20)
    task_seen(board, sent.id, "SUCCESS")
    forged = board.http.post(f"/api/tasks/{sent.id}/revoke",
                             data={"next": "/"}, headers={"Origin": "http://evil.example"})
    assert forged.status_code == 403 and "CSRF" in forged.text
    page = board.http.get(f"/tasks/{sent.id}")  # the page's form carries the token
    token = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    wrong = board.http.post(f"/api/tasks/{sent.id}/apply", data={"csrf": token + "x"},
                            headers={"accept": "text/html"})
    assert wrong.status_code == 403
    right = board.http.post(f"/api/tasks/{sent.id}/apply", data={"csrf": token,
                                                                 "next": "/tasks?limit=5"},
                            headers={"accept": "text/html"})
    assert right.status_code == 303 and right.headers["location"].startswith(
        "/tasks?limit=5&msg=sent")


# -- options: hide args, max tasks, auth ------------------------------------------------------


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    harness = Harness(tmp_path_factory.mktemp("locked"), auth="ann:s3cret pw", token="tok-1",
                      hide_args=True, max_tasks=5)
    harness.worker("-c", "1", "-n", "locked@%h")
    yield harness
    harness.close()


def test_with_auth_nothing_is_shown_without_credentials(locked):
    for path in ("/api/workers", "/api/tasks", "/metrics", "/api/openapi.json"):
        answer = locked.http.get(path)
        assert answer.status_code == 401, path
        assert "www-authenticate" not in answer.headers  # (a browser never caches Basic)
    page = locked.http.get("/tasks")
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/tasks"
    assert locked.http.get("/static/dashboard.css").status_code == 200
    basic = "Basic " + base64.b64encode(b"ann:s3cret pw").decode()
    assert locked.http.get("/api/workers", headers={"Authorization": basic}).status_code == 200
    assert locked.http.get("/metrics", headers={"Authorization": basic}).status_code == 200
    wrong = "Basic " + base64.b64encode(b"ann:guess").decode()
    assert locked.http.get("/api/workers", headers={"Authorization": wrong}).status_code == 401
    bearer = {"Authorization": "Bearer tok-1"}
    assert locked.http.get("/metrics", headers=bearer).status_code == 200
    assert locked.http.get("/metrics", headers={"Authorization": "Bearer tok-2"}
                           ).status_code == 401


def test_hide_args_and_max_tasks(locked):
    import pipeline_tasks

    bearer = {"Authorization": "Bearer tok-1"}
    results = [pipeline_tasks.echo.delay(f"secret-{i}") for i in range(8)]
    for result in results:
        result.get(timeout=20)

    def last_done():
        found = locked.http.get(f"/api/tasks/{results[-1].id}", headers=bearer)
        return found.status_code == 200 and found.json()["state"] == "SUCCESS"

    wait_until(last_done, what="the last task SUCCESS")
    listed = locked.http.get("/api/tasks", headers=bearer).json()
    assert listed["total"] == 5  # --max-tasks: the oldest are forgotten
    assert all(t["args"] == "***" and t["result"] == "***" for t in listed["tasks"])
    first = locked.http.get(f"/api/tasks/{results[0].id}", headers=bearer)
    assert first.status_code == 404 and "--max-tasks" in first.json()["error"]
    page = locked.http.get(f"/tasks/{results[-1].id}", headers=bearer).text
    assert "secret-" not in page
    again = locked.http.post(f"/api/tasks/{results[-1].id}/apply", headers=bearer)
    assert again.status_code == 200 and "secret-" not in again.text  # (hidden, still sent)


def test_hide_args_hides_step_results_too(locked):
    from runner.pipeline import engine
    from runner.pipeline.validate import load_pipeline_text

    bearer = {"Authorization": "Bearer tok-1"}
    loaded = load_pipeline_text("name: hidden\napp: pipeline_tasks\nsteps:\n  one: {task: "
                                "pipeline_tasks.echo, args: [classified]}\n")
    run_id = engine.submit(locked.app, loaded, {}).id
    run = wait_until(lambda: (lambda r: r if r["state"] == "success" else None)(
        locked.http.get(f"/api/runs/{run_id}", headers=bearer).json()), what="run success")
    assert run["steps"]["one"]["result"] == "***"
    assert "classified" not in locked.http.get(f"/runs/{run_id}", headers=bearer).text


def test_the_login_form_gives_a_session(locked):
    import httpx

    with httpx.Client(base_url=locked.base) as browser:
        form = browser.get("/login")
        token = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        bad = browser.post("/login", data={"csrf": token, "user": "ann", "password": "no",
                                           "next": "/tasks"})
        assert bad.status_code == 401 and "Wrong user" in bad.text
        good = browser.post("/login", data={"csrf": token, "user": "ann",
                                            "password": "s3cret pw", "next": "//evil.example"})
        assert good.status_code == 303 and good.headers["location"] == "/"
        assert browser.get("/api/workers").status_code == 200


def test_listening_elsewhere_needs_auth_and_bad_options_are_one_line(tmp_path):
    env_db = f"sqlite:///{tmp_path}/r.db"
    for args, says in ((["--host", "0.0.0.0"], "only with authentication"),
                       (["--auth", "nopassword"], "USER:PASSWORD"),
                       (["--pipelines", str(tmp_path / "nonexistent")],
                        f"--pipelines {tmp_path / 'nonexistent'}: no such folder")):
        done = subprocess.run([sys.executable, "-m", "runner", "dashboard", "-b", env_db,
                               "--port", str(free_port()), *args],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 2 and says in done.stderr
        assert "Traceback" not in done.stderr


def test_the_banner_masks_the_broker_password(tmp_path):
    server = subprocess.Popen([sys.executable, "-m", "runner", "dashboard", "-b",
                               "redis://user:s3cret@127.0.0.1:1/0", "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              cwd=tmp_path)
    try:
        banner = server.stdout.readline()
        assert "broker redis://user:**@127.0.0.1:1/0" in banner and "s3cret" not in banner
    finally:
        server.terminate()
        server.wait(30)


def test_a_port_in_use_is_one_line_naming_it_and_port_0_says_the_port_it_got(board, tmp_path):
    env_db = f"sqlite:///{tmp_path}/r.db"
    port = board.options.port  # (the module's dashboard listens there)
    done = subprocess.run([sys.executable, "-m", "runner", "dashboard", "-b", env_db,
                           "--port", str(port)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2, done
    assert f"--port {port}: 127.0.0.1:{port} is already in use" in done.stderr
    assert "--port N" in done.stderr and "Traceback" not in done.stderr
    assert "Errno" not in done.stderr and "runner dashboard on" not in done.stdout

    server = subprocess.Popen([sys.executable, "-m", "runner", "dashboard", "-b", env_db,
                               "--port", "0"], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        banner = server.stdout.readline()
        assert banner.startswith("runner dashboard on http://127.0.0.1:"), banner
        got = int(banner.split("http://127.0.0.1:", 1)[1].split("/", 1)[0])
        assert got != 0
        import httpx

        assert httpx.get(f"http://127.0.0.1:{got}/api/openapi.json",
                         timeout=30).status_code == 200
    finally:
        server.terminate()
        server.wait(30)
