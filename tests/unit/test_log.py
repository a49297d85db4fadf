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
