"""Properties of bbox parsing (``validate_bbox``, what ``--bbox`` and run files go through) and
of the antimeridian split (``bbox_parts``), on random boxes; and of ``safe_file_name``, which
turns item ids into file names (manifest records, work folders).

A valid box is split into halves that each run west to east, cover exactly its longitudes and
add up to its width; anything else is refused with a one-line ``ConfigError``, which the CLI
prints as one line with exit code 2.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from arctic_rts.cli import EXIT_ERROR, main
from arctic_rts.config import bbox_parts, validate_bbox
from arctic_rts.errors import ConfigError
from arctic_rts.files import SAFE_NAME_BYTES, safe_file_name

LON = st.floats(-180, 180, allow_nan=False)
LAT = st.floats(-90, 90, allow_nan=False)


def _width(w: float, e: float) -> float:
    """The box's width in degrees: west to east, across 180 when west > east."""
    return e - w if w < e else e + 360.0 - w


@st.composite
def valid_boxes(draw: st.DrawFn) -> tuple[float, float, float, float]:
    w, e = draw(LON), draw(LON)
    s, n = sorted((draw(LAT), draw(LAT)))
    assume(s < n and w != e)
    if w > e:  # across 180: at most 180 degrees wide, and not empty (180 to -180)
        assume(0 < _width(w, e) <= 180.0)
    return (w, s, e, n)


@settings(max_examples=400, deadline=None)
@given(valid_boxes())
@example((179.5, 65.0, -179.5, 66.0))
@example((180.0, 65.0, -170.0, 66.0))  # from the seam eastwards: one half is empty
@example((170.0, 65.0, -180.0, 66.0))
@example((-180.0, -90.0, 180.0, 90.0))
def test_valid_boxes_split_into_halves_that_cover_exactly_their_longitudes(
    box: tuple[float, float, float, float],
) -> None:
    w, s, e, n = validate_bbox(list(box))
    parts = bbox_parts((w, s, e, n))
    assert 1 <= len(parts) <= 2
    assert len(parts) == 2 or w < e or 180.0 in (w, -e)
    for pw, ps, pe, pn in parts:
        assert -180.0 <= pw < pe <= 180.0  # each half west to east, never empty
        assert (ps, pn) == (s, n)
    # the halves' widths add up to the box's
    assert math.isclose(sum(pe - pw for pw, _, pe, _ in parts), _width(w, e), abs_tol=1e-9)
    # they meet only at the seam: east half from 180, west half up to -180
    if len(parts) == 2:
        assert parts[0][2] == 180.0 and parts[1][0] == -180.0
    # every longitude of the box lies in a half (sampled across it), and the halves hold no other
    for frac in (0.0, 0.25, 0.5, 0.999):
        lon = w + frac * _width(w, e)
        same = (lon - 360.0, lon, lon + 360.0)  # 180 and -180 are one meridian
        assert any(pw <= x <= pe for pw, _, pe, _ in parts for x in same), (lon, parts)
    for pw, _, pe, _ in parts:
        mid = (pw + pe) / 2
        inside = (w <= mid <= e) if w < e else (mid >= w or mid <= e)
        assert inside, (mid, box)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.floats(-400, 400),
        ),
        min_size=0,
        max_size=6,
    )
)
@example([179.5, 65.0, 179.5, 66.0])  # zero width
@example([180.0, 65.0, -180.0, 66.0])  # zero width across the seam
@example([10.0, 66.0, 20.0, 65.0])  # south > north
@example([10.0, 60.0, -170.0, 61.0])  # west > east 180 degrees wide + : swapped numbers
@example([float("nan"), 60.0, 10.0, 61.0])
def test_anything_else_is_one_config_error_line(values: list[float]) -> None:
    valid = (
        len(values) == 4
        and all(math.isfinite(v) for v in values)
        and all(-180 <= values[i] <= 180 for i in (0, 2))
        and all(-90 <= values[i] <= 90 for i in (1, 3))
        and values[1] < values[3]
        and values[0] != values[2]
        and 0 < _width(values[0], values[2]) <= (180.0 if values[0] > values[2] else 360.0)
    )
    if valid:
        assert validate_bbox(values) == tuple(values)
        return
    with pytest.raises(ConfigError) as err:
        validate_bbox(values)
    assert "\n" not in str(err.value) and str(err.value).startswith("bbox")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    box=st.tuples(
        st.floats(-400, 400), st.floats(-100, 100), st.floats(-400, 400), st.floats(-100, 100)
    )
)
@example(box=(180.0, 65.0, -180.0, 66.0))
def test_the_cli_refuses_a_bad_bbox_with_one_line_and_exit_2(
    box: tuple[float, float, float, float], capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        validate_bbox(list(box))
    except ConfigError:
        pass
    else:
        assume(False)  # a valid box would go on to search (nothing listens at --stac)
    capsys.readouterr()
    # positional notation: argparse takes "-1e-05" for an option, not a negative number
    argv = [
        "map",
        "--bbox",
        *(np.format_float_positional(v, trim="-") for v in box),
        "--year",
        "2021",
    ]
    code = main([*argv, "--stac", "http://127.0.0.1:9", "--out", os.devnull + "/x.gpkg"])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR
    assert err.startswith("arctic-rts: error: bbox") and err.count("\n") == 1, err


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("names")


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=400))
@example("../../../escaped/..")
@example("a/b")
@example("..")
@example(".")
@example(".x.tmp-3")
@example("id\x00with-nul")
@example("x" * 300)
@example("é" * 200)  # 400 bytes in UTF-8
def test_item_ids_become_file_names_that_stay_in_their_folder(folder: Path, item_id: str) -> None:
    name = safe_file_name(item_id)
    assert name and "/" not in name and "\x00" not in name
    assert not name.startswith(".")  # not hidden, not . or .., not a stale temp file's shape
    assert len(name.encode()) <= SAFE_NAME_BYTES
    path = folder / (name + ".json")
    assert Path(os.path.realpath(path)).parent == Path(os.path.realpath(folder))
    path.write_text(item_id.encode("utf-8", "surrogatepass").hex())  # the file system takes it
    assert path.read_text() == item_id.encode("utf-8", "surrogatepass").hex()
    path.unlink()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.text(max_size=300))
@example("a/b", "a_b")
@example("a/b", "a_b-" + hashlib.sha256(b"a/b").hexdigest()[:16])  # a crafted lookalike
@example("x" * 300, "x" * 301)
def test_distinct_item_ids_never_share_a_file(a: str, b: str) -> None:
    assume(a != b)
    assert safe_file_name(a) != safe_file_name(b)
