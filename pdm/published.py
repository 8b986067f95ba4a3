"""Published numbers to print beside ours (config/published.csv): read, checked, and given citation keys.

Columns: dataset, method, metric (fid / is / kid), value, eval_set (train / test), num_samples, sampling_steps, ema,
source (citation + table or figure), url, note. `dataset` and `method` use this suite's names (the records'
`dataset`, the registry's method names) so a row joins on (dataset, method, metric). No number without a source:
a row whose `source` is empty is refused, naming its line.
"""

from __future__ import annotations

import string
from pathlib import Path

import pandas as pd

PUBLISHED_COLUMNS = ("dataset", "method", "metric", "value", "eval_set", "num_samples", "sampling_steps", "ema",
                     "source", "url", "note")
METRIC_LABELS = {"fid": "FID", "is": "IS", "kid": "KID"}  # published metric name -> our table's column


class PublishedError(ValueError):
    """A published-numbers file that cannot be trusted as it stands, naming the line and the fix."""


def read_published(path: str | Path) -> pd.DataFrame:
    """The checked rows, one per published number, with its `footnote` text and a `key` (a, b, ...) per footnote."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass the published-numbers file (config/published.csv) "
                                "or leave --published out to print no reference column")
    rows = pd.read_csv(path, dtype=str, keep_default_na=False, comment=None).apply(lambda c: c.str.strip())
    missing = [c for c in PUBLISHED_COLUMNS if c not in rows]
    if missing:
        raise PublishedError(f"{path} lacks the column(s) {', '.join(missing)}; its header must be "
                             f"{','.join(PUBLISHED_COLUMNS)}")
    for index, row in rows.iterrows():
        _check_row(path, index + 2, row)  # + 2: the header is line 1
    rows = rows.assign(metric=rows["metric"].str.lower(), value=rows["value"].astype(float))
    # one footnote per distinct (source, how it was measured): two settings of one paper are two footnotes
    rows["footnote"] = [describe_source(row) for _, row in rows.iterrows()]
    keys = {text: _key(i) for i, text in enumerate(dict.fromkeys(rows["footnote"]))}
    return rows.assign(key=rows["footnote"].map(keys))


def _check_row(path: Path, line: int, row: pd.Series) -> None:
    where = f"{path} line {line} ({row['dataset']}, {row['method']}, {row['metric']} = {row['value']})"
    if not row["source"]:
        raise PublishedError(f"{where} has no source: every published number needs its citation (paper and table or "
                             "figure) in the `source` column; add it, or delete the row")
    if row["metric"].lower() not in METRIC_LABELS:
        raise PublishedError(f"{where}: metric must be one of {', '.join(METRIC_LABELS)}; fix the `metric` column")
    if not row["dataset"] or not row["method"]:
        raise PublishedError(f"{where}: `dataset` and `method` must name this suite's dataset and method "
                             "(e.g. cifar10, ddpm)")
    try:
        float(row["value"])
    except ValueError:
        raise PublishedError(f"{where}: `value` is not a number; write the published number alone "
                             "(put qualifiers in `note`)") from None


def _key(index: int) -> str:
    """a, b, ..., z, aa, ab, ...: footnote keys that cannot be mistaken for our interval brackets."""
    letters = string.ascii_lowercase
    return letters[index] if index < 26 else _key(index // 26 - 1) + letters[index % 26]


def describe_source(row: pd.Series) -> str:
    """One footnote: the citation, then how the number was made (what decides whether it compares with ours)."""
    made = [f"{row['eval_set']} set" if row["eval_set"] else "",
            f"{int(float(row['num_samples'])):,} samples" if row["num_samples"] else "",
            f"{int(float(row['sampling_steps'])):,} sampling steps" if row["sampling_steps"] else "",
            {"true": "EMA weights", "false": "no EMA"}.get(row["ema"].lower(), "") if row["ema"] else "",
            row["note"]]
    detail = "; ".join(part for part in made if part)
    return f"{row['source']}" + (f" ({detail})" if detail else "") + (f" {row['url']}" if row["url"] else "")
