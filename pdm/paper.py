"""The paper's tables across datasets: IS / FID / KID per dataset x method, from several experiments' main tables.

One experiment per dataset (config/paper/all.yaml): each writes results/{experiment}/tables/main.csv (per-seed rows and
one summary row per method, pdm.report.main_table) and results.csv beside it (the flat records, which name the
dataset). This module reads those tables only, never the jobs' internals, and writes
  paper.csv                      every (dataset, method, metric): value, interval, seeds, published values and keys
  paper_{fid,is,kid}.md / .tex   rows = methods, two columns per dataset: ours (value [interval]) and published
  paper_efficiency.csv/.md/.tex  cost per dataset x method (means over seeds)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pdm.published import METRIC_LABELS
from pdm.report import _fmt
from pdm.uncertainty import t_interval

LOWER_IS_BETTER = {"fid": True, "kid": True, "is": False}
EFFICIENCY = {"params": "params", "train TFLOP": "train TFLOP", "device-hours": "device-hours",
              "train img/s": "train img/s", "sample img/s": "sample img/s", "peak memory MiB": "peak memory MiB",
              "weights MiB": "weights MiB", "external memory MiB": "external memory MiB"}


class PaperTableError(ValueError):
    """Experiment tables that cannot make one paper table, naming the files and the fix."""


def experiment_dataset(table_path: Path) -> tuple[str, pd.DataFrame]:
    """(dataset, records) of one experiment, from the results.csv that the report rule writes beside main.csv."""
    records_path = table_path.parent / "results.csv"
    if not records_path.exists():
        raise FileNotFoundError(f"{records_path} does not exist (it names the dataset of {table_path}); re-run the "
                                "experiment's report rule, which writes it beside main.csv")
    records = pd.read_csv(records_path)
    datasets = records["dataset"].dropna().unique() if "dataset" in records else []
    if len(datasets) != 1:
        raise PaperTableError(f"{records_path} should hold one dataset, found {list(datasets)}; pass one experiment "
                              "per dataset")
    return str(datasets[0]), records


def experiment_scores(table_path: str | Path, confidence: float = 0.95) -> pd.DataFrame:
    """Long rows (dataset, method, metric, value, low, high, seeds, interval) of one experiment's main.csv.

    FID and KID come from the summary rows (mean and Student t interval over >= 2 ok seeds, or the single seed's
    bootstrap interval: pdm.report._summary_row); IS has no bootstrap, so its t interval over the ok seeds is made
    here (none for one seed).
    """
    table_path = Path(table_path)
    dataset, _ = experiment_dataset(table_path)
    main = pd.read_csv(table_path, dtype={"seed": str})
    per_seed = main[main["seed"].str.fullmatch(r"\d+") & (main["status"] == "ok")]
    rows = []
    for method in dict.fromkeys(main["method"]):
        ok = per_seed[per_seed["method"] == method]
        count = len(ok)
        kind = f"t over {count} seeds" if count > 1 else "bootstrap (1 seed)" if count == 1 else "no ok seed"
        summary = main[(main["method"] == method) & ~main["seed"].str.fullmatch(r"\d+")].iloc[0]
        for metric, label in METRIC_LABELS.items():
            if label not in main:  # a score this experiment did not compute: a row that says so, never a gap
                value = low = high = float("nan")
                interval = "not computed"
            elif metric == "is":
                values = ok[label].dropna().tolist()
                value, low, high = t_interval(values, confidence)
                interval = f"t over {len(values)} seeds" if len(values) > 1 else "none"
            else:
                value, low, high, interval = summary[label], summary[f"{label} low"], summary[f"{label} high"], kind
            rows.append({"dataset": dataset, "method": method, "metric": metric, "value": value, "low": low,
                         "high": high, "seeds": count, "interval": interval})
    return pd.DataFrame(rows)


def join_published(scores: pd.DataFrame, published: pd.DataFrame | None) -> pd.DataFrame:
    """Adds `published` ('3.17; 2.9') and `published_keys` ('a; b') on (dataset, method, metric); '' where none."""
    if published is None or published.empty:
        return scores.assign(published="", published_keys="")
    groups = published.groupby(["dataset", "method", "metric"], sort=False)
    values = {k: "; ".join(_fmt(v) for v in g["value"]) for k, g in groups}
    keys = {k: "; ".join(g["key"]) for k, g in groups}
    index = list(zip(scores["dataset"], scores["method"], scores["metric"]))
    return scores.assign(published=[values.get(k, "") for k in index], published_keys=[keys.get(k, "") for k in index])


def best_separated(cells: pd.DataFrame, metric: str) -> str | None:
    """The method whose score is best in one (dataset, metric) column AND whose interval overlaps no other method's;
    None where any interval is missing or the best one overlaps another (then nothing is bolded: claims follow
    evidence, and non-overlap of the intervals is the conservative test)."""
    cells = cells.dropna(subset=["value"])
    if len(cells) < 2 or cells[["low", "high"]].isna().any().any():
        return None
    best = cells.loc[cells["value"].idxmin() if LOWER_IS_BETTER[metric] else cells["value"].idxmax()]
    others = cells.drop(index=best.name)
    separated = (others["low"] > best["high"]) | (others["high"] < best["low"])
    return str(best["method"]) if separated.all() else None


def paper_scores(table_paths, published: pd.DataFrame | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """Every experiment's scores, one dataset each, with the published values joined and the bold flags."""
    frames = [experiment_scores(p, confidence) for p in table_paths]
    datasets = [f["dataset"].iloc[0] for f in frames if not f.empty]
    repeated = sorted({d for d in datasets if datasets.count(d) > 1})
    if repeated:
        raise PaperTableError(f"dataset(s) {', '.join(repeated)} come from more than one table "
                              f"({', '.join(map(str, table_paths))}); pass one experiment per dataset")
    scores = join_published(pd.concat(frames, ignore_index=True), published)
    scores["bold"] = False
    for (_, metric), cells in scores.groupby(["dataset", "metric"], sort=False):
        best = best_separated(cells, metric)
        scores.loc[cells.index[cells["method"] == best], "bold"] = best is not None
    return scores


def efficiency_table(table_paths) -> pd.DataFrame:
    """dataset x method rows of each experiment's efficiency.csv 'mean' rows (the cost columns only)."""
    frames = []
    for path in map(Path, table_paths):
        dataset, _ = experiment_dataset(path)
        efficiency = pd.read_csv(path.parent / "efficiency.csv", dtype={"seed": str})
        means = efficiency[efficiency["seed"] == "mean"]
        frames.append(means[["method"] + [c for c in EFFICIENCY if c in means]].assign(dataset=dataset))
    table = pd.concat(frames, ignore_index=True)
    return table[["dataset", "method"] + [c for c in EFFICIENCY if c in table]]
