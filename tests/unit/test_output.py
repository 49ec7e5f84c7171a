"""Docker's wording for durations and sizes (go-units) and its table layout."""

import io

import pytest

from engine.cli.output import binary_size, ellipsis, human_duration, human_size, table


@pytest.mark.parametrize("seconds, text", [
    (0.4, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (60, "About a minute"),
    (119, "About a minute"), (120, "2 minutes"), (3599, "59 minutes"), (3600, "About an hour"),
    (5400, "2 hours"), (47 * 3600, "47 hours"), (48 * 3600, "2 days"), (13 * 86400, "13 days"),
    (14 * 86400, "2 weeks"), (59 * 86400, "8 weeks"), (60 * 86400, "2 months"),
    (729 * 86400, "24 months"), (730 * 86400, "2 years"),
])
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


@pytest.mark.parametrize("size, text", [
    (0, "0B"), (999, "999B"), (1000, "1kB"), (2_133_504, "2.13MB"), (4_260_000, "4.26MB"),
    (1_234_567_890, "1.23GB"),
])
def test_human_size(size, text):
    assert human_size(size) == text


def test_binary_size():
    assert binary_size(24 * 1024 ** 3) == "24GiB"
    assert binary_size(1536) == "1.5KiB"


def test_ellipsis():
    assert ellipsis("short", 20) == "short"
    assert ellipsis("sh -c 'while true; do echo hi; done'", 20) == "sh -c 'while true; …"
    assert len(ellipsis("x" * 50, 20)) == 20


def test_table_pads_columns_by_three():
    out = io.StringIO()
    table(["A", "LONGER"], [["xx", "1"], ["y", "22"]], out)
    assert out.getvalue().splitlines() == ["A    LONGER", "xx   1", "y    22"]
