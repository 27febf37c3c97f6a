from __future__ import annotations

import re

import pytest

from runner.exceptions import ConfigError
from runner.routing import Router, validate_routes


def route_by_size(name, args, kwargs, options, task=None, **kw):
    """A router function importable by dotted path (used by the string-route tests)."""
    if kwargs.get("size", 0) > 100:
        return {"queue": "big", "priority": 1}
    return None


def test_exact_name_routes_to_queue_string():
    router = Router({"feed.tasks.import_feed": "feeds"}, default_queue="celery")
    assert router.route("feed.tasks.import_feed", {}) == {"queue": "feeds"}


def test_unrouted_task_goes_to_default_queue_and_keeps_options():
    router = Router({"a": "q"}, default_queue="celery")
    assert router.route("other.task", {"countdown": 5}) == {"queue": "celery", "countdown": 5}


def test_no_routes_at_all_means_default_queue():
    assert Router(None, default_queue="default").route("x", {}) == {"queue": "default"}


def test_glob_patterns_match_with_fnmatch_rules():
    router = Router({"feed.tasks.*": "feeds", "*.import_*": "imports"}, default_queue="celery")
    assert router.route("feed.tasks.parse", {})["queue"] == "feeds"
    assert router.route("web.import_users", {})["queue"] == "imports"
    assert router.route("web.export_users", {})["queue"] == "celery"


def test_exact_name_beats_earlier_pattern_in_same_dict():
    router = Router({"feed.*": "feeds", "feed.special": "special"}, default_queue="celery")
    assert router.route("feed.special", {})["queue"] == "special"


def test_compiled_regex_and_re_prefixed_string_routes():
    router = Router({re.compile(r"(video|image)\.tasks\..*"): {"queue": "media", "priority": 5},
                     "re:^audio\\.": "sound"}, default_queue="celery")
    assert router.route("image.tasks.resize", {}) == {"queue": "media", "priority": 5}
    assert router.route("audio.encode", {}) == {"queue": "sound"}
    assert router.route("text.tasks.x", {}) == {"queue": "celery"}


def test_dict_route_fills_priority_and_routing_key():
    router = Router({"t": {"queue": "q", "priority": 3, "routing_key": "q.t"}}, "celery")
    assert router.route("t", {}) == {"queue": "q", "priority": 3, "routing_key": "q.t"}


def test_explicit_queue_in_options_wins_over_routes():
    router = Router({"t": {"queue": "routed", "routing_key": "routed.t", "priority": 2}}, "celery")
    assert router.route("t", {"queue": "mine"}) == {"queue": "mine", "priority": 2}
    assert router.route("t", {"priority": 9})["priority"] == 9


def test_none_valued_options_do_not_override_the_route():
    router = Router({"t": {"queue": "routed", "priority": 2}}, "celery")
    assert router.route("t", {"queue": None, "priority": None}) == {"queue": "routed",
                                                                   "priority": 2}


def test_list_of_dicts_first_match_wins():
    router = Router([{"a.*": "first"}, {"a.b": "second", "c": "third"}], "celery")
    assert router.route("a.b", {})["queue"] == "first"
    assert router.route("c", {})["queue"] == "third"


def test_list_of_pairs_keeps_pattern_order():
    router = Router(([("feed.tasks.*", "feeds"), ("*", "catch_all")],), "celery")
    assert router.route("feed.tasks.x", {})["queue"] == "feeds"
    assert router.route("zzz", {})["queue"] == "catch_all"


def test_callable_route_sees_args_and_may_decline():
    calls = []

    def by_tenant(name, args, kwargs, options, task=None, **kw):
        calls.append((name, args, kwargs, task))
        return f"tenant-{kwargs['tenant']}" if "tenant" in kwargs else None

    router = Router([by_tenant, {"*": "fallback"}], "celery")
    assert router.route("t", {}, args=(1,), kwargs={"tenant": "acme"},
                        task="T") == {"queue": "tenant-acme"}
    assert router.route("t", {}, kwargs={}) == {"queue": "fallback"}
    assert calls[0] == ("t", (1,), {"tenant": "acme"}, "T") and len(calls) == 2


def test_callable_route_is_called_every_time_not_cached():
    answers = iter(["one", "two"])
    router = Router(lambda name, args, kwargs, options, task=None: next(answers), "celery")
    assert [router.route("t", {})["queue"] for _ in range(2)] == ["one", "two"]


def test_callable_dict_without_queue_gets_default_queue():
    router = Router(lambda *a, **kw: {"priority": 7}, "celery")
    assert router.route("t", {}) == {"queue": "celery", "priority": 7}


def test_callable_returning_junk_is_a_config_error_naming_the_task():
    router = Router(lambda *a, **kw: 42, "celery")
    with pytest.raises(ConfigError, match="'my.task'"):
        router.route("my.task", {})


def test_router_given_as_dotted_path_is_imported():
    router = Router([f"{__name__}.route_by_size", {"*": "small"}], "celery")
    assert router.route("t", {}, kwargs={"size": 500}) == {"queue": "big", "priority": 1}
    assert router.route("t", {}, kwargs={"size": 5}) == {"queue": "small"}


def test_unimportable_router_path_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot import router 'nowhere_pkg.route'"):
        Router("nowhere_pkg.route", "celery")


def test_route_result_is_a_fresh_dict_each_time():
    router = Router({"t": {"queue": "q"}}, "celery")
    router.route("t", {})["queue"] = "mutated"
    assert router.route("t", {}) == {"queue": "q"}


def test_unknown_queue_rejected_when_create_missing_is_off():
    router = Router({"t": "ghost"}, "celery", queues=["celery"], create_missing=False)
    with pytest.raises(ConfigError, match="'ghost'.*task_create_missing_queues"):
        router.route("t", {})
    assert router.route("other", {}) == {"queue": "celery"}
    lenient = Router({"t": "ghost"}, "celery", queues=["celery"])
    assert lenient.route("t", {}) == {"queue": "ghost"}


def test_validate_routes_accepts_good_routes():
    assert validate_routes(None) == []
    assert validate_routes({"a": "q", "b.*": {"queue": "r", "priority": 0},
                            re.compile("x"): "s", "re:^y": "t"}) == []
    assert validate_routes([route_by_size, "pkg.mod:router", [("a", "q")]]) == []


def test_validate_routes_reports_every_problem_with_its_location():
    errors = validate_routes({"re:(unclosed": "q", "bad_value": 5, "no_queue": {"priority": 1},
                              "bad_priority": {"queue": "q", "priority": "high"},
                              "empty": ""})
    assert len(errors) == 5
    joined = "\n".join(errors)
    assert "task_routes['re:(unclosed']: invalid regular expression" in joined
    assert "task_routes['bad_value']: a route must be a queue name or a dict" in joined
    assert "task_routes['no_queue']: the route dict has no 'queue' key" in joined
    assert "'priority' must be an integer from 0 to 255" in joined
    assert "task_routes['empty']: the queue name is empty" in joined


def test_validate_routes_explains_unwrapped_pairs():
    errors = validate_routes([("feed.*", "feeds")])
    assert errors and "list of pairs inside a list" in errors[0]
    assert validate_routes(42) and "got int 42" in validate_routes(42)[0]


def test_router_raises_config_error_listing_all_route_problems():
    with pytest.raises(ConfigError) as caught:
        Router({"a": 1, "b": None}, "celery")
    assert len(caught.value.issues) == 2
    assert all(issue.key == "task_routes" for issue in caught.value.issues)
