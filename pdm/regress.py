"""Regression gate: compare a results table with a committed golden table under per-metric tolerances.

    pdm-bench regress --table results/ci/tables/main.csv --golden tests/golden/ci/main.csv \
                      --tolerances tests/golden/ci/tolerances.yaml [--update-golden]

Every cell that differs is printed (row key, column, golden, got, |diff|, tolerance, OK/FAIL); the exit status is
0 when everything is within tolerance, 1 when anything is not, 2 for bad input (missing or unreadable file, bad
tolerance file). `--update-golden` prints the same differences, then copies the table over the golden file: the
one command that refreshes the golden table after an intended change (review the printed differences first).

Tolerance file (YAML):

    key: [method, seed]          # columns that identify a row (default [method, seed]); compared as text
    rows: per-seed               # per-seed: skip summary rows whose seed is not an integer (mean, std); all (default)
    columns:                     # every golden column must appear here or under `ignore`
      FID: {rel: 0.15}           # |got - golden| <= 0.15 * |golden|
      KID: {abs: 0.02}           # |got - golden| <= 0.02
      clean-FID: {rel: 0.15, abs: 1.0}   # within either bound (the larger one)
      params: exact              # equal (numbers as numbers, text as text)
    ignore: [train s, sample img/s]      # deliberately not compared (timings depend on the machine)

Values: an empty / NaN cell in both tables is equal, in one only is a failure; text (e.g. a "failed" marker)
compares exactly whatever the tolerance. A row in one table only, or a column in one table only (unless
ignored), is a failure: nothing the golden table records, and nothing new, goes unchecked.
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from pdm.io import atomic_path

DEFAULT_KEY = ("method", "seed")
ROW_MODES = ("all", "per-seed")
SPEC_KEYS = {"key", "rows", "columns", "ignore"}
_INTEGER = re.compile(r"[+-]?\d+")
PROG = "pdm-bench regress"


class RegressError(ValueError):
    """Bad input (files, tolerance spec): exit status 2, and the message names the problem and the fix."""


# --------------------------------------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class Tolerance:
    """How far a value may move: `exact`, or within rel * |golden| or abs (the larger bound when both are given)."""

    rel: float | None = None
    abs: float | None = None

    @property
    def exact(self) -> bool:
        return self.rel is None and self.abs is None

    def bound(self, golden: float) -> float:
        bounds = [0.0]
        if self.rel is not None:
            bounds.append(self.rel * abs(golden))
        if self.abs is not None:
            bounds.append(self.abs)
        return max(bounds)

    def describe(self) -> str:
        if self.exact:
            return "exact"
        parts = [f"{name} {value:g}" for name, value in (("rel", self.rel), ("abs", self.abs)) if value is not None]
        return " or ".join(parts)


EXACT = Tolerance()


@dataclass(frozen=True)
class Spec:
    key: tuple[str, ...] = DEFAULT_KEY
    rows: str = "all"
    columns: dict[str, Tolerance] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()


def parse_tolerance(column: str, raw) -> Tolerance:
    """`exact` or a mapping with `rel` and/or `abs` (non-negative numbers)."""
    fix = f"write e.g. `{column}: {{rel: 0.1}}`, `{{abs: 0.5}}`, `{{rel: 0.1, abs: 0.5}}` or `exact`"
    if raw == "exact":
        return EXACT
    if not isinstance(raw, dict) or not raw:
        raise RegressError(f"tolerance of column '{column}' is {raw!r}; {fix}")
    unknown = set(raw) - {"rel", "abs"}
    if unknown:
        raise RegressError(f"tolerance of column '{column}' has unknown key(s) {sorted(unknown)}; {fix}")
    for name, value in raw.items():
        # bool is an int in Python: `rel: yes` must not silently mean 1.0
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise RegressError(f"tolerance of column '{column}': {name} is {value!r}, not a number >= 0; {fix}")
    return Tolerance(rel=_float_or_none(raw.get("rel")), abs=_float_or_none(raw.get("abs")))


def _float_or_none(value) -> float | None:
    return None if value is None else float(value)


def _string_list(raw, name: str, path: Path) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise RegressError(f"{path}: `{name}` must be a list of column names, e.g. [train s, sample img/s]; got {raw!r}")
    return tuple(raw)


def parse_spec(raw, path: Path) -> Spec:
    """Validate the tolerance file's content; unknown keys are errors so a typo never disables a check."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RegressError(f"{path}: expected a mapping with keys {sorted(SPEC_KEYS)}; got {type(raw).__name__}")
    unknown = set(raw) - SPEC_KEYS
    if unknown:
        raise RegressError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(SPEC_KEYS)}")
    key = _string_list(raw.get("key", list(DEFAULT_KEY)), "key", path)
    if not key:
        raise RegressError(f"{path}: `key` is empty; name the columns that identify a row, e.g. [method, seed]")
    rows = raw.get("rows", "all")
    if rows not in ROW_MODES:
        raise RegressError(f"{path}: `rows` is {rows!r}; use one of {list(ROW_MODES)}")
    columns_raw = raw.get("columns") or {}
    if not isinstance(columns_raw, dict):
        raise RegressError(f"{path}: `columns` must map column names to tolerances; got {columns_raw!r}")
    columns = {str(name): parse_tolerance(str(name), tol) for name, tol in columns_raw.items()}
    ignore = _string_list(raw.get("ignore") or [], "ignore", path)
    both = sorted(set(columns) & set(ignore))
    if both:
        raise RegressError(f"{path}: column(s) {both} are both under `columns` and `ignore`; keep one")
    keyed = sorted((set(columns) | set(ignore)) & set(key))
    if keyed:
        raise RegressError(f"{path}: column(s) {keyed} are key columns (they identify rows); remove them from `columns`/`ignore`")
    return Spec(key=key, rows=rows, columns=columns, ignore=ignore)


def load_spec(path: str | Path) -> Spec:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))  # column names such as "ΔFID vs ddpm"
    except FileNotFoundError:
        raise RegressError(f"tolerance file {path} does not exist; check the path (see pdm/regress.py for the format)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RegressError(f"cannot read tolerance file {path}: {err}") from None
    except yaml.YAMLError as err:
        raise RegressError(f"tolerance file {path} is not valid YAML: {err}") from None
    return parse_spec(raw, path)


# -------------------------------------------------------------------------------------------------------- tables


def load_table(path: str | Path, what: str = "table") -> pd.DataFrame:
    """Every cell as text (NaN where empty): numbers are parsed per cell later, so a column holding both numbers
    and a "failed" marker compares cell by cell, and the printed values are exactly what the CSV says."""
    path = Path(path)
    if not path.is_file():
        hint = " (create it with --update-golden)" if what == "golden table" else ""
        raise RegressError(f"{what} {path} does not exist or is not a file; check the path{hint}")
    try:
        return pd.read_csv(path, dtype=str)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise RegressError(f"{what} {path} is not a readable CSV ({type(err).__name__}: {err}); regenerate it") from None


def _select_rows(frame: pd.DataFrame, spec: Spec, what: str) -> pd.DataFrame:
    missing = [c for c in spec.key if c not in frame.columns]
    if missing:
        raise RegressError(f"{what} has no key column(s) {missing} (it has {list(frame.columns)}); fix `key` in the tolerance file")
    frame = frame.copy()
    for column in spec.key:
        frame[column] = frame[column].fillna("")  # an empty key cell still identifies a row
    if spec.rows == "per-seed":
        if "seed" not in frame.columns:
            raise RegressError(f"`rows: per-seed` needs a `seed` column, which {what} lacks; use `rows: all`")
        frame = frame[frame["seed"].fillna("").str.strip().str.fullmatch(_INTEGER)]
    duplicated = frame[frame.duplicated(list(spec.key), keep=False)]
    if not duplicated.empty:
        first = _key_text(tuple(duplicated.iloc[0][list(spec.key)]), spec.key)
        raise RegressError(f"{what} has several rows with key {first}; add columns to `key` so each row is unique")
    return frame.set_index(list(spec.key), drop=True)


def check_columns(spec: Spec, golden: pd.DataFrame, path: Path) -> None:
    """Every golden column has a tolerance or is ignored; every tolerance names a golden column."""
    value_columns = [c for c in golden.columns if c not in spec.key]
    unchecked = [c for c in value_columns if c not in spec.columns and c not in spec.ignore]
    if unchecked:
        raise RegressError(f"golden column(s) {unchecked} have no tolerance: add them to `columns` "
                           f"(e.g. `{unchecked[0]}: {{rel: 0.1}}` or `exact`) or to `ignore` in {path}")
    stale = [c for c in spec.columns if c not in golden.columns]
    if stale:
        raise RegressError(f"{path} names column(s) {stale} that the golden table lacks (it has {value_columns}); "
                           f"remove them, or refresh the golden table with --update-golden")


# ---------------------------------------------------------------------------------------------------- comparing


@dataclass(frozen=True)
class Difference:
    """One differing cell (or a whole row / column present on one side only)."""

    key: str
    column: str
    golden: str
    got: str
    diff: float | None
    tolerance: str
    ok: bool


def _key_text(values: tuple, key: tuple[str, ...]) -> str:
    return " ".join(f"{name}={value}" for name, value in zip(key, values))


def _value(text):
    """A CSV cell as None (empty / NaN), a float, or text."""
    if text is None or pd.isna(text):
        return None
    try:
        return float(text)
    except ValueError:
        return str(text)


def _show(text) -> str:
    return "NaN" if _value(text) is None else str(text)


def _equal(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b  # None == None; text vs text; a number never equals text


def compare_cell(key: str, column: str, golden_text, got_text, tol: Tolerance) -> Difference | None:
    """None when the cells are equal; else a Difference saying whether it is within the tolerance."""
    golden, got = _value(golden_text), _value(got_text)
    if _equal(golden, got):
        return None
    numeric = isinstance(golden, float) and isinstance(got, float)
    diff = abs(got - golden) if numeric else None
    if numeric and not tol.exact and math.isfinite(golden):
        bound = tol.bound(golden)
        # isclose forgives float representation at the boundary (0.07 - 0.05 = 0.020000000000000004 vs abs 0.02);
        # NaN / inf diffs compare False either way
        ok = diff <= bound or math.isclose(diff, bound, rel_tol=1e-9)
        tolerance = f"{tol.describe()} (<= {bound:.4g})"
    else:  # exact columns, text, or a value missing on one side: any change fails
        ok, tolerance = False, tol.describe()
    return Difference(key, column, _show(golden_text), _show(got_text), diff, tolerance, ok)


def compare(golden: pd.DataFrame, table: pd.DataFrame, spec: Spec) -> list[Difference]:
    """Every difference between the two tables (both already loaded as text), golden order first."""
    g, t = _select_rows(golden, spec, "golden table"), _select_rows(table, spec, "table")
    differences = []
    columns = [c for c in g.columns if c not in spec.ignore]
    for column in columns:
        if column not in t.columns:
            differences.append(Difference("(all rows)", column, "column present", "column missing", None, "", False))
    for column in t.columns:
        if column not in g.columns and column not in spec.ignore:
            differences.append(Difference("(all rows)", column, "column absent", "column present", None,
                                          "refresh golden, add a tolerance", False))
    for index in g.index:
        key = _key_text(index if isinstance(index, tuple) else (index,), spec.key)
        if index not in t.index:
            differences.append(Difference(key, "(row)", "present", "missing", None, "", False))
            continue
        for column in columns:
            if column in t.columns:
                found = compare_cell(key, column, g.at[index, column], t.at[index, column], spec.columns[column])
                if found is not None:
                    differences.append(found)
    for index in t.index.difference(g.index, sort=False):
        key = _key_text(index if isinstance(index, tuple) else (index,), spec.key)
        differences.append(Difference(key, "(row)", "absent", "present (extra)", None, "", False))
    return differences


# --------------------------------------------------------------------------------------------------- formatting


def format_differences(differences: list[Difference]) -> str:
    """An aligned plain-text table (readable in a CI log), then one summary line."""
    if not differences:
        return "regress: OK, the table matches the golden table exactly"
    header = ("row", "column", "golden", "got", "|diff|", "tolerance", "status")
    rows = [(d.key, d.column, d.golden, d.got, "" if d.diff is None else f"{d.diff:.4g}", d.tolerance,
             "OK" if d.ok else "FAIL") for d in differences]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in (header, *rows)]
    lines.insert(1, "  ".join("-" * width for width in widths))
    failed = sum(not d.ok for d in differences)
    verdict = f"FAIL, {failed} out of tolerance" if failed else "OK, all within tolerance"
    lines.append(f"regress: {len(differences)} difference(s), {verdict}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ driving


def refresh(table: str | Path, golden: str | Path) -> None:
    """Copy the table over the golden file, byte for byte and atomically (a crash leaves the old golden intact)."""
    with atomic_path(golden) as tmp:
        shutil.copyfile(table, tmp)


def regress(table_path, golden_path, tolerances_path, update_golden: bool = False) -> int:
    """Compare, print, and (with update_golden) refresh; returns the exit status. Raises RegressError on bad input."""
    spec = load_spec(tolerances_path)
    table = load_table(table_path, "table")
    if update_golden:
        return _update(table, table_path, golden_path, tolerances_path, spec)
    golden = load_table(golden_path, "golden table")
    check_columns(spec, golden, Path(tolerances_path))
    differences = compare(golden, table, spec)
    print(format_differences(differences))
    return 1 if any(not d.ok for d in differences) else 0


def _update(table: pd.DataFrame, table_path, golden_path, tolerances_path, spec: Spec) -> int:
    """The table becomes the golden, so it must satisfy the tolerance file; the old golden (if any) is only
    compared for the log, and a mismatch with it is the point of refreshing, not an error."""
    check_columns(spec, table, Path(tolerances_path))
    _select_rows(table, spec, "table")  # key columns present and unique
    if Path(golden_path).is_file():
        try:
            print(format_differences(compare(load_table(golden_path, "golden table"), table, spec)))
        except RegressError as err:
            print(f"regress: the old golden table cannot be compared ({err}); replacing it anyway")
    refresh(table_path, golden_path)
    print(f"regress: golden table {golden_path} updated from {table_path}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--table", required=True, help="results table to check, e.g. results/ci/tables/main.csv")
    parser.add_argument("--golden", required=True, help="committed golden table, e.g. tests/golden/ci/main.csv")
    parser.add_argument("--tolerances", required=True, help="tolerance YAML, e.g. tests/golden/ci/tolerances.yaml")
    parser.add_argument("--update-golden", action="store_true",
                        help="after printing the differences, copy the table over the golden file (intended change)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Entry for an argparse subcommand (`add_arguments` on its parser): exit status, errors on stderr."""
    try:
        return regress(args.table, args.golden, args.tolerances, args.update_golden)
    except RegressError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    return run(add_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
