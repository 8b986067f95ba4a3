"""Tables and plots of the curves that need no retraining (pdm.sweep): FID against network evaluations per image
(tables/sweep.csv, plots/fid_vs_nfe.png) and FID over training (tables/training_curve.csv,
plots/fid_over_training.png). Like pdm.report, they read the flat result records only.

Each point is one (method, seed, sampler, steps) or (method, seed, fraction) record with its bootstrap interval; with
several seeds a summary row per point gives the mean and a Student t interval across the ok seeds (the seeds are the
independent replications), and the plots draw that; with one seed they draw its bootstrap interval.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pdm.io import atomic_path, read_json
from pdm.report import ReportError, _fmt, _interval_cells, _row_replicates, _save_figure, _with_interval, _write_text
from pdm.uncertainty import t_interval

SAMPLER_ORDER = {"ddim": 0, "dpmpp": 1, "ddpm": 2}
SCORES = {"fid": ("FID", "fid_bootstrap"), "kid_mean": ("KID", "kid_bootstrap")}


def read_records(paths) -> pd.DataFrame:
    """One row per record (nested dicts left out: versions live in results.csv of the main report)."""
    rows = [{"path": str(p), **{k: v for k, v in read_json(p).items() if not isinstance(v, dict)}} for p in paths]
    if not rows:
        raise ReportError("no records to report")
    frame = pd.DataFrame(rows)
    if frame["refstats_id"].dropna().nunique() > 1:
        raise ReportError("records scored against different reference statistics cannot share a curve: "
                          + ", ".join(sorted(frame["path"])))
    return frame


def _check_unique(frame: pd.DataFrame, keys: list[str]) -> None:
    duplicated = frame[frame.duplicated(keys, keep=False)]
    if not duplicated.empty:
        raise ReportError(f"two records for one point ({', '.join(keys)}): {', '.join(duplicated['path'])}; keep one")


def _point_rows(frame: pd.DataFrame, keys: list[str], extra: dict[str, str], confidence: float) -> pd.DataFrame:
    """Per-seed rows with bootstrap intervals, then (several seeds) a summary row per point across the ok seeds."""
    rows = []
    for _, r in frame.iterrows():
        row = {**{k: r[k] for k in keys}, "seed": str(r["seed"])}
        for column, label in extra.items():
            row[label] = r.get(column)
        for column, (label, replicates) in SCORES.items():
            row.update(_interval_cells(label, r.get(column), _row_replicates(r, replicates), confidence))
        row["status"] = r.get("status")
        rows.append(row)
    table = pd.DataFrame(rows)
    summaries = []
    for point, group in table.groupby(keys, sort=False):
        ok = group[group["status"] == "ok"]
        if len(group) < 2 or len(ok) < 2:
            continue
        row = {**dict(zip(keys, point if isinstance(point, tuple) else (point,))), "seed": f"mean ({len(ok)} seeds)",
               "status": "ok"}
        for label in extra.values():
            values = ok[label]
            row[label] = values.mean() if pd.api.types.is_numeric_dtype(values) else values.iloc[0]
        for label, _ in SCORES.values():
            row[label], row[f"{label} low"], row[f"{label} high"] = t_interval(ok[label].tolist(), confidence)
        summaries.append(row)
    table = pd.concat([table, pd.DataFrame(summaries)], ignore_index=True) if summaries else table
    return table.sort_values([*keys, "seed"], kind="stable", key=_order(frame)).reset_index(drop=True)


def _order(frame: pd.DataFrame):
    methods = {m: i for i, m in enumerate(dict.fromkeys(frame["method"]))}  # the config's order
    samplers = SAMPLER_ORDER

    def key(column: pd.Series) -> pd.Series:
        if column.name == "method":
            return column.map(methods)
        if column.name == "sampler":
            return column.map(lambda s: samplers.get(s, 99))
        if column.name == "seed":  # per-seed rows first, then the summary
            return column.map(lambda s: float(s) if s.isdigit() else float("inf"))
        return column

    return key


def _markdown(table: pd.DataFrame, note: str) -> str:
    text = table.drop(columns=[f"{label} {end}" for label, _ in SCORES.values() for end in ("low", "high")])
    text = text.astype(object)
    for label, _ in SCORES.values():
        text[label] = [_with_interval(*v) for v in zip(table[label], table[f"{label} low"], table[f"{label} high"])]
    return text.map(_fmt).to_markdown(index=False) + f"\n\n{note}\n"


def _write(table: pd.DataFrame, stem: Path, note: str) -> None:
    with atomic_path(stem.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False)
    _write_text(stem.with_suffix(".md"), _markdown(table, note))


def _note(frame: pd.DataFrame, confidence: float) -> str:
    level = f"{confidence * 100:g}%"
    counts = frame["bootstrap_samples"].dropna() if "bootstrap_samples" in frame else pd.Series(dtype=float)
    replicates = int(counts.max()) if not counts.empty else 0
    ok = frame[frame["status"] == "ok"]
    scored = (f" {int(ok['num_samples'].iloc[0])} samples vs {int(ok['num_real'].iloc[0])} real images, "
              f"{ok['extractor'].iloc[0]}; CPU: {ok['cpu_model'].iloc[0]}.") if not ok.empty else ""
    return (f"Intervals are {level}: per seed, the bootstrap interval over {replicates} resamples of the samples; "
            f"'mean (n seeds)' rows, the mean and a Student t interval across seeds.{scored}")


def _plot(table: pd.DataFrame, x: str, panels: str | None, xlabel: str, title: str, path: Path, log_x: bool) -> None:
    """One line per method (mean over seeds where there are several, else the one seed), its interval as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    has_summary = table["seed"].str.startswith("mean").any()
    points = table[table["seed"].str.startswith("mean")] if has_summary else table[table["status"] == "ok"]
    if points.empty:  # every run failed: an empty plot that says so (the table has the reasons)
        points = table.iloc[:0]
    names = sorted(dict.fromkeys(points[panels]), key=lambda n: SAMPLER_ORDER.get(n, 99)) if panels else [None]
    names = names or [None]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), sharex=True, sharey=True, squeeze=False)
    palette = dict(zip(dict.fromkeys(table["method"]), sns.color_palette(n_colors=table["method"].nunique())))
    for ax, name in zip(axes[0], names):
        part = points if name is None else points[points[panels] == name]
        for method, line in part.groupby("method", sort=False):
            line = line.sort_values(x)
            ax.plot(line[x], line["FID"], marker="o", color=palette[method], label=method)
            ax.fill_between(line[x], line["FID low"], line["FID high"], color=palette[method], alpha=0.2, linewidth=0)
        if log_x:  # ticks at the measured points, written as plain numbers
            ax.set_xscale("log")
            ax.set_xticks(sorted(points[x].dropna().unique()))
            ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set(xlabel=xlabel, ylabel="FID ↓", title=name or "")
    seeds = "mean over seeds, t interval" if has_summary else "one seed, bootstrap interval"
    separator = "\n" if len(names) == 1 else " "  # one narrow panel: the title on two lines, or it is cut off
    fig.suptitle(f"{title}{separator}({seeds})", fontsize=10)
    legend = {label: handle for ax in axes[0] for handle, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(legend.values(), legend.keys(), loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    _save_figure(fig, path)
    plt.close(fig)


def sweep_report(record_paths, tables_dir, plots_dir, confidence: float = 0.95) -> pd.DataFrame:
    """tables/sweep.csv + .md and plots/fid_vs_nfe.png from the sweep's records (one per method, seed, sampler, steps)."""
    frame = read_records(record_paths)
    _check_unique(frame, ["method", "seed", "sampler", "sampling_steps"])
    extra = {"sampling_steps": "steps", "nfe": "NFE", "clean_fid": "clean-FID",
             "sampling_images_per_second": "sample img/s"}
    table = _point_rows_by_steps(frame, extra, confidence)
    differs = table[(table["NFE"] != table["steps"]) & table["NFE"].notna()]
    nfe_note = ("NFE = denoiser network evaluations per image; it equals the step count for every row here "
                "(DDIM, DDPM and DPM-Solver++ 2M evaluate the U-Net once per step; no method here uses guidance)."
                if differs.empty else "NFE = denoiser network evaluations per image; it differs from the step "
                f"count for {', '.join(sorted(set(differs['method'] + '/' + differs['sampler'])))}.")
    _write(table, Path(tables_dir) / "sweep", f"{nfe_note} {_note(frame, confidence)}")
    _plot(table, "NFE", "sampler", "network evaluations per image (NFE)", "FID against sampling cost",
          Path(plots_dir) / "fid_vs_nfe.png", log_x=True)
    return table


def _point_rows_by_steps(frame: pd.DataFrame, extra: dict[str, str], confidence: float) -> pd.DataFrame:
    keyed = frame.assign(point_steps=frame["sampling_steps"])
    table = _point_rows(keyed, ["method", "sampler", "point_steps"], {k: v for k, v in extra.items()
                                                                        if k != "sampling_steps"}, confidence)
    table = table.rename(columns={"point_steps": "steps"})
    scores = [f"{label}{end}" for label, _ in SCORES.values() for end in ("", " low", " high")]
    return table[["method", "seed", "sampler", "steps", "NFE", *scores, "clean-FID", "sample img/s", "status"]]


def guidance_report(record_paths, tables_dir, plots_dir, confidence: float = 0.95) -> pd.DataFrame:
    """tables/guidance.csv + .md and plots/fid_vs_guidance.png: one trained model per (method, seed) sampled under
    each classifier-free guidance weight of `sweep.guidance_weights`, with the experiment's `sample:` settings."""
    frame = read_records(record_paths)
    _check_unique(frame, ["method", "seed", "guidance_weight"])
    table = _point_rows(frame, ["method", "guidance_weight"], {"nfe": "NFE"}, confidence)
    table = table.rename(columns={"guidance_weight": "w"})
    table = table[["method", "seed", "w", *[c for c in table.columns if c not in ("method", "seed", "w")]]]
    first = frame.iloc[0]
    note = (f"Classifier-free guidance: eps = (1 + w) eps(y) - w eps(null); w = 0 is the conditional model alone (one "
            f"network evaluation per step, two otherwise: NFE). {first['sampler']} {int(first['sampling_steps'])} "
            f"steps. {_note(frame, confidence)}")
    _write(table, Path(tables_dir) / "guidance", note)
    _plot(table, "w", None, "guidance weight w", "FID against the guidance weight",
          Path(plots_dir) / "fid_vs_guidance.png", log_x=False)
    return table


def training_curve_report(record_paths, tables_dir, plots_dir, confidence: float = 0.95) -> pd.DataFrame:
    """tables/training_curve.csv + .md and plots/fid_over_training.png: the snapshots' records and the final
    weights' (fraction 1.0), all sampled with the experiment's own `sample:` settings."""
    frame = read_records(record_paths)
    if "snapshot_fraction" not in frame:
        frame["snapshot_fraction"] = np.nan
    if "snapshot_step" not in frame:
        frame["snapshot_step"] = np.nan
    final = frame["snapshot_fraction"].isna()  # the final weights' record
    frame.loc[final, "snapshot_fraction"] = 1.0
    frame.loc[final, "snapshot_step"] = frame.loc[final, "steps_done"]
    _check_unique(frame, ["method", "seed", "snapshot_fraction"])
    table = _point_rows(frame, ["method", "snapshot_fraction"], {"snapshot_step": "step"}, confidence)
    table = table.rename(columns={"snapshot_fraction": "fraction"}).astype({"step": "Int64"})
    table = table[["method", "seed", "fraction", *[c for c in table.columns if c not in ("method", "seed", "fraction")]]]
    first = frame.iloc[0]
    note = (f"Weights saved at each fraction of the training budget (1.0 = the final weights), sampled with "
            f"{first['sampler']} {int(first['sampling_steps'])} steps. {_note(frame, confidence)}")
    _write(table, Path(tables_dir) / "training_curve", note)
    _plot(table, "fraction", None, "fraction of the training budget", "FID over training",
          Path(plots_dir) / "fid_over_training.png", log_x=False)
    return table
