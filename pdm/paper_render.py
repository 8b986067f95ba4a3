"""Render the cross-dataset scores (pdm.paper) as Markdown and LaTeX (booktabs) and write every paper table atomically.

Layout of one metric's table: rows = methods, two columns per dataset, `ours` (value [low, high]) and `published`
(value with a footnote key; every key's footnote gives the source and how the number was made).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pdm.html_tables import write_html_twin
from pdm.io import atomic_path
from pdm.paper import efficiency_table, experiment_dataset, paper_scores
from pdm.published import METRIC_LABELS, read_published
from pdm.report import _fmt, _write_text

LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
ARROWS = {"fid": "lower is better", "kid": "lower is better", "is": "higher is better"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _ours(row: pd.Series, latex: bool) -> str:
    if pd.isna(row["value"]):
        return "--" if latex else "–"
    value = _fmt(row["value"])
    if row["bold"]:
        value = rf"\textbf{{{value}}}" if latex else f"**{value}**"
    if pd.isna(row["low"]) or pd.isna(row["high"]):
        return value
    interval = f"[{_fmt(row['low'])}, {_fmt(row['high'])}]"
    return f"{value} {{\\scriptsize {interval}}}" if latex else f"{value} {interval}"


def _published(row: pd.Series, latex: bool) -> str:
    if not row["published"]:
        return "--" if latex else "–"
    values, keys = row["published"].split("; "), row["published_keys"].split("; ")
    if latex:
        return "; ".join(rf"{v}\textsuperscript{{{k}}}" for v, k in zip(values, keys))
    return "; ".join(f"{v} ({k})" for v, k in zip(values, keys))


def _grid(scores: pd.DataFrame, metric: str, latex: bool) -> tuple[list[str], list[str], list[list[str]]]:
    """(datasets, methods, cell rows): methods in first-seen order; a method absent from a dataset shows '–'."""
    part = scores[scores["metric"] == metric]
    datasets, methods = list(dict.fromkeys(part["dataset"])), list(dict.fromkeys(part["method"]))
    cells = {(r["dataset"], r["method"]): r for _, r in part.iterrows()}
    empty = "--" if latex else "–"
    rows = []
    for method in methods:
        row = [latex_escape(method) if latex else method]
        for dataset in datasets:
            cell = cells.get((dataset, method))
            row += [_ours(cell, latex), _published(cell, latex)] if cell is not None else [empty, empty]
        rows.append(row)
    return datasets, methods, rows


def footnotes(scores: pd.DataFrame, published: pd.DataFrame | None, metric: str) -> list[tuple[str, str]]:
    """[(key, text)] of the published numbers this metric's table shows."""
    if published is None:
        return []
    shown = {k for keys in scores.loc[scores["metric"] == metric, "published_keys"] for k in keys.split("; ") if k}
    notes = published[published["key"].isin(shown)].drop_duplicates("key")
    return list(zip(notes["key"], notes["footnote"]))


def metric_note(metric: str, confidence: float) -> str:
    return (f"{METRIC_LABELS[metric]} ({ARROWS[metric]}). Ours: value [{confidence:.0%} interval]: the mean and a "
            "Student t interval over the seeds, or one seed's bootstrap interval (see each experiment's main.md). Bold: "
            "the best method of a dataset, only where its interval overlaps no other method's. Published numbers are "
            "shown as reported; their settings (footnotes) may differ from ours.")


def markdown(scores, published, metric: str, confidence: float, settings: str) -> str:
    datasets, _, rows = _grid(scores, metric, latex=False)
    header = ["method"] + [f"{d} {part}" for d in datasets for part in ("ours", "published")]
    table = pd.DataFrame(rows, columns=header).to_markdown(index=False)
    notes = "\n".join(f"- ({key}) {text}" for key, text in footnotes(scores, published, metric))
    return f"{table}\n\n{metric_note(metric, confidence)} {settings}\n" + (f"\n{notes}\n" if notes else "")


def latex(scores, published, metric: str, confidence: float, settings: str) -> str:
    """A booktabs `table` ready to paste (needs \\usepackage{booktabs}); footnotes under the tabular."""
    datasets, _, rows = _grid(scores, metric, latex=True)
    lines = [r"% needs \usepackage{booktabs}", r"\begin{table}[t]", r"\centering",
             r"\begin{tabular}{l" + " rr" * len(datasets) + "}", r"\toprule",
             " & ".join([""] + [rf"\multicolumn{{2}}{{c}}{{{latex_escape(d)}}}" for d in datasets]) + r" \\",
             " ".join(rf"\cmidrule(lr){{{2 + 2 * i}-{3 + 2 * i}}}" for i in range(len(datasets))),
             " & ".join(["method"] + ["ours", "published"] * len(datasets)) + r" \\", r"\midrule"]
    lines += [" & ".join(row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [rf"\par{{\footnotesize \textsuperscript{{{k}}} {latex_escape(text)}}}"
              for k, text in footnotes(scores, published, metric)]
    caption = latex_escape(f"{metric_note(metric, confidence)} {settings}")
    lines += [rf"\caption{{{caption}}}", rf"\label{{tab:paper-{metric}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def our_settings(table_paths) -> str:
    """How our numbers were made, per dataset (what a reader checks before comparing with a published number)."""
    parts = []
    for path in map(Path, table_paths):
        dataset, records = experiment_dataset(path)
        ok = records[records["status"] == "ok"] if "status" in records else records
        if ok.empty:
            continue
        first = ok.iloc[0]
        parts.append(f"{dataset}: {int(first['num_samples']):,} samples vs {int(first['num_real']):,} real images, "
                     f"{first['sampler']} {int(first['sampling_steps'])} steps")
    return ("Ours, per dataset: " + "; ".join(parts) + ".") if parts else ""


def write_paper_tables(table_paths, out_dir, published_path=None, confidence: float = 0.95) -> pd.DataFrame:
    """Every paper table under `out_dir`; returns the long scores table (paper.csv)."""
    out_dir = Path(out_dir)
    published = read_published(published_path) if published_path else None
    scores = paper_scores(table_paths, published, confidence)
    settings = our_settings(table_paths)
    with atomic_path(out_dir / "paper.csv") as tmp:
        scores.to_csv(tmp, index=False)
    for metric in METRIC_LABELS:
        _write_text(out_dir / f"paper_{metric}.md", markdown(scores, published, metric, confidence, settings))
        _write_text(out_dir / f"paper_{metric}.tex", latex(scores, published, metric, confidence, settings))
        write_html_twin(out_dir / f"paper_{metric}.md")
    efficiency = efficiency_table(table_paths)
    with atomic_path(out_dir / "paper_efficiency.csv") as tmp:
        efficiency.to_csv(tmp, index=False)
    note = ("Means over seeds (each experiment's efficiency.md has the per-seed rows and how each column is measured). "
            "device-hours: stage 1 + training.")
    _write_text(out_dir / "paper_efficiency.md", efficiency.map(_fmt).to_markdown(index=False) + f"\n\n{note}\n")
    write_html_twin(out_dir / "paper_efficiency.md")
    shown = efficiency.assign(dataset=efficiency["dataset"].map(latex_escape), method=efficiency["method"].map(latex_escape))
    _write_text(out_dir / "paper_efficiency.tex", r"% needs \usepackage{booktabs}" + "\n"
                + shown.to_latex(index=False, float_format="%.4g", na_rep="--"))
    return scores
