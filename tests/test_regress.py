"""The regression gate (pdm.regress): a golden table and tolerances in tmp_path, tables edited one change at a time."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

from pdm import regress

TOLERANCES = {
    "key": ["method", "seed"],
    "rows": "per-seed",
    "columns": {"FID": {"rel": 0.15}, "KID": {"abs": 0.02}, "clean-FID": {"rel": 0.15, "abs": 1.0},
                "IS": {"rel": 0.1}, "params": "exact"},
    "ignore": ["train s", "sample img/s"],
}


def _golden_frame() -> pd.DataFrame:
    """Shaped like report.summarise's main table: per-seed rows, then mean / std rows per method."""
    rows = [
        ("pdm", "0", 40.0, 0.030, 42.0, float("nan"), 1_100_000, 120.5, 55.0),
        ("pdm", "1", 44.0, 0.034, 45.0, float("nan"), 1_100_000, 121.0, 54.0),
        ("ddpm", "0", 60.0, 0.050, 61.0, float("nan"), 1_000_000, 100.0, 60.0),
        ("ddpm", "1", 62.0, 0.052, 63.0, float("nan"), 1_000_000, 101.0, 61.0),
        ("pdm", "mean", 42.0, 0.032, 43.5, float("nan"), 1_100_000, 120.75, 54.5),
        ("pdm", "std", 2.83, 0.0028, 2.12, float("nan"), 0.0, 0.35, 0.7),
    ]
    columns = ["method", "seed", "FID", "KID", "clean-FID", "IS", "params", "train s", "sample img/s"]
    return pd.DataFrame(rows, columns=columns)


@pytest.fixture
def files(tmp_path):
    golden, table, tolerances = tmp_path / "golden.csv", tmp_path / "main.csv", tmp_path / "tolerances.yaml"
    _golden_frame().to_csv(golden, index=False)
    _golden_frame().to_csv(table, index=False)
    tolerances.write_text(yaml.safe_dump(TOLERANCES, sort_keys=False))
    return table, golden, tolerances


def _run(files, *extra) -> int:
    table, golden, tolerances = files
    return regress.main(["--table", str(table), "--golden", str(golden), "--tolerances", str(tolerances), *extra])


def _edit(path, method, seed, column, value) -> None:
    frame = pd.read_csv(path, dtype={"seed": str})
    frame[column] = frame[column].astype(object)  # a value of another type (a "failed" marker) may go in
    frame.loc[(frame["method"] == method) & (frame["seed"] == seed), column] = value
    frame.to_csv(path, index=False)


def test_identical_table_passes(files, capsys):
    assert _run(files) == 0
    assert "matches the golden table" in capsys.readouterr().out


def test_metric_beyond_tolerance_fails_and_names_row_column_values(files, capsys):
    _edit(files[0], "pdm", "1", "FID", 52.5)  # 44 -> 52.5: |diff| 8.5 > 0.15 * 44 = 6.6
    assert _run(files) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "FID" in line and "seed=1" in line)
    for text in ("method=pdm", "seed=1", "FID", "44.0", "52.5", "8.5", "rel 0.15", "FAIL"):
        assert text in line
    assert "1 out of tolerance" in out


def test_move_within_tolerance_passes_and_is_still_printed(files, capsys):
    _edit(files[0], "pdm", "0", "FID", 45.0)  # 40 -> 45: 5 <= 6
    _edit(files[0], "ddpm", "0", "KID", 0.065)  # 0.05 -> 0.065: 0.015 <= 0.02
    _edit(files[0], "ddpm", "1", "clean-FID", 63.9)  # rel bound 9.45 is the larger one
    assert _run(files) == 0
    out = capsys.readouterr().out
    statuses = [line.split()[-1] for line in out.splitlines() if line.startswith("method=")]
    assert statuses == ["OK", "OK", "OK"] and "45.0" in out and "all within tolerance" in out


def test_both_bounds_given_uses_the_larger(files):
    tol = regress.parse_tolerance("clean-FID", {"rel": 0.1, "abs": 1.0})
    assert tol.bound(2.0) == 1.0 and tol.bound(50.0) == 5.0
    assert regress.compare_cell("k", "c", "2.0", "2.9", tol).ok
    assert not regress.compare_cell("k", "c", "2.0", "3.1", tol).ok
    exactly_at_bound = regress.compare_cell("k", "KID", "0.05", "0.07", regress.parse_tolerance("KID", {"abs": 0.02}))
    assert exactly_at_bound.ok  # |diff| is 0.020000000000000004 in floating point


def test_missing_and_extra_rows_fail(files, capsys):
    frame = pd.read_csv(files[0], dtype={"seed": str})
    frame = frame[~((frame["method"] == "ddpm") & (frame["seed"] == "1"))]
    extra = frame.iloc[[0]].assign(method="ldm")
    pd.concat([frame, extra]).to_csv(files[0], index=False)
    assert _run(files) == 1
    out = capsys.readouterr().out
    assert any("method=ddpm seed=1" in line and "missing" in line and "FAIL" in line for line in out.splitlines())
    assert any("method=ldm seed=0" in line and "extra" in line and "FAIL" in line for line in out.splitlines())


def test_per_seed_skips_summary_rows_and_all_compares_them(files, capsys):
    _edit(files[0], "pdm", "std", "FID", 99.0)
    assert _run(files) == 0
    files[2].write_text(yaml.safe_dump({**TOLERANCES, "rows": "all"}))
    assert _run(files) == 1
    assert "seed=std" in capsys.readouterr().out


def test_untoleranced_golden_column_is_an_input_error(files, capsys):
    spec = {**TOLERANCES, "columns": {k: v for k, v in TOLERANCES["columns"].items() if k != "KID"}}
    files[2].write_text(yaml.safe_dump(spec))
    assert _run(files) == 2
    err = capsys.readouterr().err
    assert "KID" in err and "ignore" in err and "Traceback" not in err


def test_tolerance_for_a_column_the_golden_lacks_is_an_input_error(files, capsys):
    files[2].write_text(yaml.safe_dump({**TOLERANCES, "columns": {**TOLERANCES["columns"], "FD-DINO": {"rel": 0.1}}}))
    assert _run(files) == 2
    assert "FD-DINO" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [{"rel": -1}, {"rel": "a lot"}, {"tol": 0.1}, {}, 0.1, "approx", {"abs": True}])
def test_bad_tolerance_spec_is_an_input_error(files, capsys, bad):
    files[2].write_text(yaml.safe_dump({**TOLERANCES, "columns": {**TOLERANCES["columns"], "FID": bad}}))
    assert _run(files) == 2
    err = capsys.readouterr().err
    assert "FID" in err and "exact" in err


@pytest.mark.parametrize("problem", ["missing table", "missing golden", "garbage csv", "bad yaml", "unknown key", "bad rows"])
def test_bad_input_exits_2_without_traceback(files, capsys, problem):
    table, golden, tolerances = files
    if problem == "missing table":
        table.unlink()
    elif problem == "missing golden":
        golden.unlink()
    elif problem == "garbage csv":
        table.write_bytes(b"")
    elif problem == "bad yaml":
        tolerances.write_text("columns: {FID: [")
    elif problem == "unknown key":
        tolerances.write_text(yaml.safe_dump({**TOLERANCES, "colums": {}}))
    elif problem == "bad rows":
        tolerances.write_text(yaml.safe_dump({**TOLERANCES, "rows": "some"}))
    assert _run(files) == 2
    err = capsys.readouterr().err
    assert err.startswith("pdm-bench regress: error:") and "Traceback" not in err


def test_exact_column_catches_a_change(files, capsys):
    _edit(files[0], "ddpm", "0", "params", 1_000_001)
    assert _run(files) == 1
    line = next(line for line in capsys.readouterr().out.splitlines() if "params" in line and "ddpm" in line)
    assert "1000000" in line and "1000001" in line and "exact" in line and "FAIL" in line


def test_strings_and_nans_compare_exactly(files, capsys):
    _edit(files[0], "pdm", "0", "FID", "failed")  # a failed job's marker in a metric column
    _edit(files[0], "ddpm", "0", "IS", 9.1)  # NaN in golden only
    _edit(files[0], "ddpm", "1", "KID", float("nan"))  # NaN in the table only
    assert _run(files) == 1
    out = capsys.readouterr().out
    assert "failed" in out and "3 out of tolerance" in out  # NaN in both (every other IS cell) is equal


def test_new_column_in_table_fails(files, capsys):
    frame = pd.read_csv(files[0], dtype={"seed": str}).assign(**{"FD-DINO": 1.0})
    frame.to_csv(files[0], index=False)
    assert _run(files) == 1
    assert "FD-DINO" in capsys.readouterr().out


def test_update_golden_rewrites_the_golden_file(files, capsys):
    table, golden, _ = files
    _edit(table, "pdm", "1", "FID", 52.5)
    assert _run(files, "--update-golden") == 0
    out = capsys.readouterr().out
    assert "52.5" in out and "updated" in out  # the differences are printed before the refresh
    assert golden.read_bytes() == table.read_bytes()
    assert _run(files) == 0


def test_update_golden_creates_a_missing_golden(files):
    table, golden, _ = files
    golden.unlink()
    assert _run(files, "--update-golden") == 0
    assert golden.read_bytes() == table.read_bytes()


def test_compare_returns_records(files):
    table, golden, tolerances = files
    _edit(table, "pdm", "0", "KID", 0.1)
    spec = regress.load_spec(tolerances)
    [difference] = regress.compare(regress.load_table(golden), regress.load_table(table), spec)
    assert (difference.key, difference.column, difference.ok) == ("method=pdm seed=0", "KID", False)
    assert math.isclose(difference.diff, 0.07)
