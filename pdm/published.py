"""Published results beside ours: load and check `config/published.csv` (issue 9, item 7: no number without a source).

Each row is one number a paper reports, named with this suite's dataset and method names (the paper's own name of
the model stays in `paper_name`), with the evaluation settings that decide whether it is comparable to ours
(reference split, sample count, sampling steps, EMA weights) and a citation precise enough to find the table cell.
`docs/published_sources.md` quotes the sentence or table cell behind every row.

Check a file by hand after adding rows: `python -m pdm.published [config/published.csv]`.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "config" / "published.csv"

COLUMNS = ("dataset", "method", "paper_name", "metric", "value", "eval_set", "num_samples", "sampling_steps", "ema",
           "source", "url", "note")
REQUIRED_TEXT = ("dataset", "method", "paper_name", "metric", "value", "eval_set", "ema", "source", "url")
DATASETS = ("cifar10", "stl10", "eurosat", "celeba", "tinyimagenet")  # the reference code's five benchmarks
METHODS = ("pdm", "spdm", "ddpm", "cddpm", "protodiffusion", "ldm", "rdm")  # the registry's names ({method} wildcard)
METRICS = ("fid", "is", "kid", "clean_fid")
# Which images a score compares against; "none" is for the Inception Score, which uses generated images only.
EVAL_SETS = ("train", "test", "unknown", "none")
EMA_VALUES = {"true": True, "false": False, "unknown": pd.NA}
# Columns that identify one reported number: two rows equal on all of them are the same number entered twice.
IDENTITY = ("dataset", "method", "paper_name", "metric", "eval_set", "num_samples", "sampling_steps", "ema", "source")


class PublishedTableError(ValueError):
    """The published-results file has rows that cannot be used; the message lists every problem and its fix."""


def load_published(path: str | Path = DEFAULT_PATH) -> pd.DataFrame:
    """Read and check the published-results CSV; return it typed (value float, counts Int64, ema boolean with NA).

    Every problem in the file is collected and raised together, each naming its row (the CSV line) and its fix.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; create it with the header line {','.join(COLUMNS)} "
                                f"(see docs/published_sources.md) or pass the path of your published-results CSV")
    try:  # everything as text: numbers are parsed below so a bad cell gets a message, not a silent NaN
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise PublishedTableError(f"{path} is not a readable CSV ({err}); fix the quoting (a cell with a comma needs "
                                  f"double quotes) or restore it from git") from None
    missing = [c for c in COLUMNS if c not in raw.columns]
    unknown = [c for c in raw.columns if c not in COLUMNS]
    if missing or unknown:
        raise PublishedTableError(f"{path}: the header must be exactly {','.join(COLUMNS)}"
                                  + (f"; missing column(s): {', '.join(missing)}" if missing else "")
                                  + (f"; unknown column(s): {', '.join(unknown)} (put remarks in `note`)"
                                     if unknown else ""))
    raw = raw[list(COLUMNS)].apply(lambda column: column.str.strip())
    problems, rows = [], []
    for index, row in raw.iterrows():
        names = "/".join(row[c] or "?" for c in ("dataset", "method", "metric"))
        where = f"row {index + 1} (line {index + 2}: {names})"
        row_problems = _row_problems(row)
        problems += [f"{where}: {p}" for p in row_problems]
        if not row_problems:
            rows.append(_typed(row))
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    if not problems:
        problems += _duplicates(raw)
    if problems:
        raise PublishedTableError(f"{path} has {len(problems)} problem(s); no row is used until all are fixed:\n  "
                                  + "\n  ".join(problems))
    return table.astype({"value": "float64", "num_samples": "Int64", "sampling_steps": "Int64", "ema": "boolean"})


def published_for(table: pd.DataFrame, dataset: str, metric: str, eval_set: str | None = None) -> pd.DataFrame:
    """The published rows for one dataset and metric (optionally one reference split), for a reference column."""
    for name, value, allowed in (("dataset", dataset, DATASETS), ("metric", metric, METRICS)):
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")
    chosen = (table["dataset"] == dataset) & (table["metric"] == metric)
    if eval_set is not None:
        chosen &= table["eval_set"] == eval_set
    return table[chosen].reset_index(drop=True)


def _row_problems(row: pd.Series) -> list[str]:
    problems = [f"`{c}` is empty; every number needs it" + (" (authors, year, title, table or figure number)"
                                                               if c == "source" else "")
                for c in REQUIRED_TEXT if not row[c]]
    for column, allowed in (("dataset", DATASETS), ("method", METHODS), ("metric", METRICS), ("eval_set", EVAL_SETS),
                            ("ema", tuple(EMA_VALUES))):
        if row[column] and row[column] not in allowed:
            problems.append(f"{column} {row[column]!r} is not one of {', '.join(allowed)}; use the suite's name "
                            f"(the paper's own name goes in `paper_name`)" if column == "method" else
                            f"{column} {row[column]!r} is not one of {', '.join(allowed)}")
    if row["value"]:
        problems += _value_problems(row["value"], row["metric"])
    if row["metric"] == "is" and row["eval_set"] not in ("none", ""):
        problems.append(f"eval_set {row['eval_set']!r} on an Inception Score row; the IS compares with no "
                        f"reference images, write none")
    if row["metric"] in ("fid", "kid", "clean_fid") and row["eval_set"] == "none":
        problems.append(f"eval_set none on a {row['metric']} row; say which images it compares against "
                        f"(train, test) or unknown if the paper does not say")
    for column in ("num_samples", "sampling_steps"):
        if row[column] and not (row[column].isdigit() and int(row[column]) > 0):
            problems.append(f"{column} {row[column]!r} is not a positive whole number; leave it empty if the paper "
                            f"does not say")
    if row["url"] and not row["url"].startswith(("https://", "http://")):
        problems.append(f"url {row['url']!r} is not a web address; give the paper's https:// link (arXiv abs page)")
    return problems


def _value_problems(text: str, metric: str) -> list[str]:
    try:
        value = float(text)
    except ValueError:
        return [f"value {text!r} is not a number; write it as printed in the paper (e.g. 3.17), without +/- or units "
                f"(those go in `note`)"]
    if not math.isfinite(value):
        return [f"value {text!r} is not finite; a published score is a finite number"]
    if metric == "is" and value < 1:
        return [f"value {text} is below 1, impossible for an Inception Score (it is exp of a KL divergence); "
                f"check the metric and the cell"]
    if metric in ("fid", "kid", "clean_fid") and value < 0:
        return [f"value {text} is negative, impossible for {metric}; check the sign and the cell"]
    return []


def _typed(row: pd.Series) -> dict:
    typed = row.to_dict()
    typed["value"] = float(row["value"])
    for column in ("num_samples", "sampling_steps"):
        typed[column] = int(row[column]) if row[column] else pd.NA
    typed["ema"] = EMA_VALUES[row["ema"]]
    return typed


def _duplicates(raw: pd.DataFrame) -> list[str]:
    repeated = raw[raw.duplicated(list(IDENTITY), keep=False)]
    problems = []
    for _, group in repeated.groupby(list(IDENTITY), sort=False):
        lines = ", ".join(str(i + 2) for i in group.index)
        values = ", ".join(group["value"])
        problems.append(f"lines {lines} report the same number twice (values {values}); keep the one that matches "
                        f"the cited table and delete the other")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Check a published-results CSV and print a one-line summary per dataset; exit 1 with the problems if any."""
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else DEFAULT_PATH
    try:
        table = load_published(path)
    except (PublishedTableError, FileNotFoundError) as err:
        print(err, file=sys.stderr)
        return 1
    print(f"{path}: {len(table)} row(s), every one with a source")
    for dataset, group in table.groupby("dataset"):
        print(f"  {dataset}: " + ", ".join(f"{m} {k}={v:g} ({s})" for m, k, v, s in
                                          group[["method", "metric", "value", "eval_set"]].itertuples(index=False)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# --- footnotes for the paper tables (pdm.paper, pdm.paper_render) ---------------------------------------------------
METRIC_LABELS = {"fid": "FID", "is": "IS", "kid": "KID"}  # published metric -> our table's column (clean_fid: none yet)
# Our paper configs score FID / KID against the training images, as the reference code does: a number against the
# test set is another quantity (DDPM CIFAR-10: 3.17 train, 5.24 test), so the reference column leaves it out.
COMPARABLE_EVAL_SETS = ("train", "none", "unknown")
PublishedError = PublishedTableError  # the name the paper tables use


def read_published(path: str | Path = DEFAULT_PATH) -> pd.DataFrame:
    """The checked rows the tables can show, each with its `footnote` text and a `key` (a, b, ...) per footnote."""
    table = load_published(path)
    table = table[table["metric"].isin(METRIC_LABELS) & table["eval_set"].isin(COMPARABLE_EVAL_SETS)]
    table = table.reset_index(drop=True)
    table["footnote"] = [describe_source(row) for _, row in table.iterrows()]
    keys = {text: _footnote_key(i) for i, text in enumerate(dict.fromkeys(table["footnote"]))}
    return table.assign(key=table["footnote"].map(keys))


def _footnote_key(index: int) -> str:
    """a, b, ..., z, aa, ab, ...: keys that cannot be mistaken for our interval brackets."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return letters[index] if index < 26 else _footnote_key(index // 26 - 1) + letters[index % 26]


def describe_source(row: pd.Series) -> str:
    """One footnote: the citation, then how the number was made (what decides whether it compares with ours)."""
    made = [f"{row['eval_set']} set" if row["eval_set"] in ("train", "test") else "",
            f"{int(row['num_samples']):,} samples" if not pd.isna(row["num_samples"]) else "",
            f"{int(row['sampling_steps']):,} sampling steps" if not pd.isna(row["sampling_steps"]) else "",
            "" if pd.isna(row["ema"]) else ("EMA weights" if row["ema"] else "no EMA")]
    detail = "; ".join(part for part in made if part)
    return f"{row['source']}" + (f" ({detail})" if detail else "") + (f" {row['url']}" if row["url"] else "")
