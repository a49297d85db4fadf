"""The log formatter: the standard format, with a cheaper timestamp."""

from __future__ import annotations

import logging

import pytest

from ankihost.log import FORMAT, _Formatter


@pytest.mark.parametrize("created", [0.0, 1_764_639_000.0015, 1_764_639_000.999, 1_764_639_001.5])
def test_lines_equal_the_standard_formatters(created: float) -> None:
    record = logging.LogRecord("ankihost.request", logging.INFO, __file__, 1, "POST %s", ("/sync/meta",), None)
    record.created, record.msecs = created, (created - int(created)) * 1000
    ours, standard = _Formatter(FORMAT), logging.Formatter(FORMAT)
    assert ours.format(record) == standard.format(record)
    # the cached date part is reused within a second and replaced at the next one
    record.created += 1
    assert ours.format(record) == standard.format(record)


def _lines(logger_name: str, emit) -> list[str]:
    import io

    from ankihost.log import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        emit()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return stream.getvalue().splitlines()


def test_json_request_line_has_the_text_lines_fields_and_one_line() -> None:
    import json

    from ankihost.web.request_log import RequestLog

    record = RequestLog("POST", "/sync/meta", "10.0.0.1", user="ali\nce", client='evil"\n{"x":1}', status=200)
    (line,) = _lines("ankihost.request", record.write)
    entry = json.loads(line)
    assert entry["level"] == "INFO" and entry["logger"] == "ankihost.request"
    assert (entry["method"], entry["target"], entry["status"], entry["ip"]) == ("POST", "/sync/meta", 200, "10.0.0.1")
    assert entry["user"] == "ali\\nce" and entry["client"] == 'evil"\\n{"x":1}'
    assert entry["message"].startswith("POST /sync/meta user=ali\\nce client=evil")
    assert isinstance(entry["ms"], int) and entry["time"].endswith("+00:00")


def test_text_request_line_escapes_client_values(caplog) -> None:
    from ankihost.web.request_log import RequestLog

    caplog.set_level(logging.INFO, "ankihost.request")
    RequestLog("GET", "/x", "1.2.3.4", client="a\nb\u202e").write()
    (message,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in message and "a\\nb\\u202e" in message


def test_json_audit_line(tmp_path) -> None:
    import json

    from ankihost.accounts.audit import Audit
    from ankihost.accounts.sqlite import SqliteAccountStore

    store = SqliteAccountStore.open(tmp_path / "accounts.db")
    try:
        (line,) = _lines("ankihost.audit", lambda: Audit(store, "cli").record(
            "device.revoked", "bob", actor="admin page", devices="ab12\ncd"))
    finally:
        store.close()
    entry = json.loads(line)
    assert (entry["event"], entry["account"], entry["actor"], entry["devices"]) == (
        "device.revoked", "bob", "admin page", "ab12\\ncd")
    assert entry["message"] == "device.revoked account=bob actor=admin page devices=ab12\\ncd"


def test_json_error_has_its_traceback_on_one_line() -> None:
    import json

    log = logging.getLogger("ankihost.test.json")

    def fail() -> None:
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            log.exception("it failed")

    (line,) = _lines("ankihost.test.json", fail)
    entry = json.loads(line)
    assert entry["level"] == "ERROR" and "ValueError: bad\nthing" in entry["traceback"]


def test_recent_errors_keep_the_last_warnings_and_errors() -> None:
    from ankihost.log import RECENT_ERRORS, RecentErrors

    recent = RecentErrors()
    log = logging.getLogger("ankihost.test.recent")
    log.addHandler(recent)
    try:
        log.info("not kept")
        for i in range(RECENT_ERRORS + 5):
            log.warning("warning %d", i)
        log.error("x" * 2000)
    finally:
        log.removeHandler(recent)
    entries = recent.newest_first()
    assert len(entries) == RECENT_ERRORS
    assert entries[0].level == "ERROR" and len(entries[0].message) <= 501
    assert entries[1].message == f"warning {RECENT_ERRORS + 4}"
