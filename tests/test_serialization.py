from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest

from runner import serialization
from runner.exceptions import ContentDisallowed, SerializationError

RICH = {
    "aware": datetime(2024, 5, 17, 13, 45, 1, 123456, tzinfo=timezone(timedelta(hours=2))),
    "utc": datetime(2024, 5, 17, 11, 45, tzinfo=UTC),
    "naive": datetime(2024, 5, 17, 13, 45, 1, 5),
    "day": date(2024, 2, 29),
    "clock": time(23, 59, 58, 999),
    "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "money": Decimal("12.3400000000000000000001"),
    "blob": b"\x00\xff\x10binary",
    "text": "naïve – ünïcode ✓",
    "nested": [{"when": date(2000, 1, 1)}, None, True, 1.5],
}


class NeedsKeyword(Exception):
    def __init__(self, message: str, *, code: int):
        super().__init__(message)
        self.code = code


class Outer:
    class InnerError(ValueError):
        pass


class NotAnException:
    pass


@pytest.mark.parametrize("name", ["json", "yaml", "msgpack", "pickle"])
def test_round_trips_datetime_uuid_decimal_bytes(name):
    content_type, payload = serialization.dumps(RICH, name)
    assert isinstance(payload, bytes)
    assert serialization.loads(payload, content_type) == RICH


def test_json_round_trips_datetime_uuid_decimal_bytes_with_types_preserved():
    content_type, payload = serialization.dumps(RICH)
    assert content_type == "application/json"
    back = serialization.loads(payload, content_type)
    for key, value in RICH.items():
        assert type(back[key]) is type(value), key
    assert back["naive"].tzinfo is None
    assert back["aware"].utcoffset() == timedelta(hours=2)


def test_json_is_compact_utf8_and_plain_json_for_other_readers():
    _, payload = serialization.dumps({"a": [1, 2], "s": "é", "d": date(2024, 1, 2)})
    assert payload == ('{"a":[1,2],"s":"é","d":{"__type__":"date","__value__":"2024-01-02"}}'
                       .encode())
    assert json.loads(payload)["s"] == "é"


@pytest.mark.parametrize("name", ["json", "yaml", "msgpack"])
def test_tuples_come_back_as_lists(name):
    content_type, payload = serialization.dumps({"t": (1, (2, 3))}, name)
    assert serialization.loads(payload, content_type) == {"t": [1, [2, 3]]}


def test_json_leaves_user_dicts_with_type_keys_alone():
    data = {"__type__": "datetime", "other": 1}
    assert serialization.loads(serialization.dumps(data)[1], "application/json") == data
    unknown = {"__type__": "spaceship", "__value__": "x"}
    assert serialization.loads(serialization.dumps(unknown)[1], "application/json") == unknown


def test_pickle_refused_unless_accepted():
    content_type, payload = serialization.dumps({"x": 1}, "pickle")
    accept = serialization.accept_set(["json"])
    with pytest.raises(ContentDisallowed) as caught:
        serialization.loads(payload, content_type, accept=accept)
    assert str(caught.value) == (
        "Refusing to deserialize content of type pickle (application/x-python-serialize): "
        "not in accept_content ['json']")
    allowed = serialization.accept_set(["json", "application/x-python-serialize"])
    assert serialization.loads(payload, content_type, accept=allowed) == {"x": 1}


def test_refusal_happens_before_decoding():
    with pytest.raises(ContentDisallowed):
        serialization.loads(b"not pickle at all", "application/x-python-serialize",
                            accept=frozenset({"application/json"}))


def test_accept_set_maps_names_and_content_types():
    assert serialization.accept_set(["json", "application/x-yaml"]) == frozenset(
        {"application/json", "application/x-yaml"})
    assert serialization.accept_set("json") == frozenset({"application/json"})


def test_unknown_names_list_the_registered_ones():
    for call in (lambda: serialization.accept_set(["json", "bson"]),
                 lambda: serialization.dumps(1, "bson"),
                 lambda: serialization.content_type_of("bson")):
        with pytest.raises(SerializationError, match=r"'bson'.*json \(application/json\)"):
            call()


def test_unknown_content_type_on_loads_is_a_serialization_error():
    with pytest.raises(SerializationError, match="application/bson"):
        serialization.loads(b"x", "application/bson")


def test_content_type_with_charset_parameter_is_understood():
    assert serialization.loads(b'{"a":1}', "application/json; charset=utf-8") == {"a": 1}


def test_content_type_of_name_and_type():
    assert serialization.content_type_of("yaml") == "application/x-yaml"
    assert serialization.content_type_of("application/json") == "application/json"


def test_decoding_garbage_raises_serialization_error():
    for content_type, payload in [("application/json", b"{nope"),
                                  ("application/json", b"\xff\xfe"),
                                  ("application/json", b'{"__type__":"uuid","__value__":"zz"}'),
                                  ("application/x-python-serialize", b"garbage"),
                                  ("application/x-yaml", b"a: [unclosed"),
                                  ("application/x-msgpack", b"\xc1")]:
        with pytest.raises(SerializationError):
            serialization.loads(payload, content_type)


def test_unencodable_object_raises_serialization_error_naming_type():
    with pytest.raises(SerializationError, match="Cannot serialize dict with json: Object of type object"):
        serialization.dumps({"x": object()})


def test_registered_names_and_custom_serializer():
    assert {"json", "pickle", "yaml", "msgpack"} <= set(serialization.registered_names())
    serialization.register("upper", "text/x-upper", lambda s: s.upper().encode(),
                           lambda b: b.decode().lower())
    try:
        assert serialization.dumps("abc", "upper") == ("text/x-upper", b"ABC")
        assert serialization.loads(b"ABC", "text/x-upper") == "abc"
    finally:
        serialization._by_name.pop("upper")
        serialization._by_content_type.pop("text/x-upper")


def _through_json(exc: BaseException) -> BaseException:
    data = serialization.exception_to_dict(exc)
    content_type, payload = serialization.dumps(data)
    return serialization.dict_to_exception(serialization.loads(payload, content_type))


def test_builtin_exception_comes_back_as_itself():
    back = _through_json(KeyError("missing"))
    assert type(back) is KeyError and back.args == ("missing",)
    os_error = _through_json(FileNotFoundError(2, "No such file"))
    assert type(os_error) is FileNotFoundError and os_error.errno == 2


def test_exception_dict_has_celery_keys_and_reprs_unserializable_args():
    marker = object()
    data = serialization.exception_to_dict(ValueError("bad", marker, date(2024, 1, 1)))
    assert data == {"exc_type": "ValueError", "exc_qualname": "ValueError",
                    "exc_module": "builtins",
                    "exc_message": ["bad", repr(marker), date(2024, 1, 1)]}


def test_nested_exception_class_is_found_by_qualname():
    back = _through_json(Outer.InnerError("deep"))
    assert type(back) is Outer.InnerError and str(back) == "deep"


def test_exception_whose_init_rejects_args_is_rebuilt_without_calling_init():
    back = _through_json(NeedsKeyword("boom", code=3))
    assert type(back) is NeedsKeyword
    assert back.args == ("boom",) and str(back) == "boom"


def test_unknown_exception_type_gets_stand_in_with_same_name():
    data = {"exc_type": "QuotaExceeded", "exc_qualname": "QuotaExceeded",
            "exc_module": "billing_service_not_installed.errors", "exc_message": ["over by 3"]}
    back = serialization.dict_to_exception(data)
    assert type(back).__name__ == "QuotaExceeded"
    assert type(back).__module__ == "billing_service_not_installed.errors"
    assert isinstance(back, Exception) and str(back) == "over by 3"
    assert type(serialization.dict_to_exception(data)) is type(back)


def test_local_exception_class_gets_stand_in():
    class LocalError(Exception):
        pass

    back = _through_json(LocalError("x"))
    assert type(back) is not LocalError
    assert type(back).__qualname__ == LocalError.__qualname__ and str(back) == "x"


def test_non_exception_class_is_not_instantiated():
    data = serialization.exception_to_dict(ValueError("payload"))
    data.update(exc_type="NotAnException", exc_qualname="NotAnException", exc_module=__name__)
    back = serialization.dict_to_exception(data)
    assert type(back) is not NotAnException and isinstance(back, Exception)
    assert type(back).__name__ == "NotAnException" and str(back) == "payload"


def test_celery_style_string_exc_message_is_accepted():
    back = serialization.dict_to_exception({"exc_type": "RuntimeError", "exc_message": "old"})
    assert type(back) is RuntimeError and str(back) == "old"


def test_malformed_exception_dict_raises_serialization_error():
    with pytest.raises(SerializationError):
        serialization.dict_to_exception({"result": 1})


@pytest.mark.parametrize("method", ["gzip", "zlib", "bzip2", "lzma", None])
def test_compression_round_trips(method):
    data = b"runner " * 1000
    packed = serialization.compress(data, method)
    assert serialization.decompress(packed, method) == data
    if method:
        assert len(packed) < len(data)


def test_unknown_compression_and_corrupt_data_raise_serialization_error():
    with pytest.raises(SerializationError, match="gzip, zlib, bzip2"):
        serialization.compress(b"x", "snappy")
    with pytest.raises(SerializationError, match="zlib"):
        serialization.decompress(b"not compressed", "zlib")
