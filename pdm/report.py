"""Aggregate the per-job JSON records into tidy pandas tables (CSV, Markdown, LaTeX) and seaborn plots.

Tables and plots read the concatenated records only (`results.csv`), never the jobs' internals.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from pdm.html_tables import write_html_twin
from pdm.io import atomic_path, read_json
from pdm.paper_figures import experiment_sample_figure
from pdm.uncertainty import (
    excludes_zero,
    paired_differences,
    percentile_interval,
    t_interval,
)

# column in the records -> column in the paper-style tables
MAIN_COLUMNS = {
    "method": "method",
    "seed": "seed",
    "fid": "FID",
    "kid_mean": "KID",
    "clean_fid": "clean-FID",
    "is_mean": "IS",
    "prototypes_used": "prototypes used",
    "prototypes_used_nearest": "nearest prototypes used",  # an ablation whose generation prior is not the nearest one
    "parameters_sampling": "params",
    "status": "status",
}  # scores only: timings live in the efficiency table, so main.csv is bitwise reproducible on one machine
# Scores shown with an interval: record column -> (table column, bootstrap replicates in the record)
INTERVAL_SCORES = {"fid": ("FID", "fid_bootstrap"), "kid_mean": ("KID", "kid_bootstrap")}
BOOTSTRAP_LISTS = ("fid_bootstrap", "kid_bootstrap")  # kept out of results.csv (200 numbers a cell)
DEFAULT_REFERENCE, DEFAULT_CONFIDENCE = "ddpm", 0.95  # as in pdm/config.schema.yaml (report:)
EFFICIENCY_COLUMNS = {
    "method": "method",
    "seed": "seed",
    "steps_done": "steps",
    "gflop_per_step": "GFLOP/step",
    "train_tflop": "train TFLOP",
    "stage1_tflop": "stage-1 TFLOP",
    "parameters_sampling": "params",
    "weights_mib": "weights MiB",
    "prototype_bank_kib": "prototype bank KiB",
    "training_only_mib": "training-only MiB",
    "external_memory_mib": "external memory MiB",
    "stage1_seconds": "stage-1 s",
    "train_seconds": "train s",
    "device_hours": "device-hours",
    "train_images_per_second": "train img/s",
    "sampling_images_per_second": "sample img/s",
    "peak_memory_mib": "peak memory MiB",
}
# Stage-1 tables: LDM's autoencoder bounds its FID (rFID / PSNR on held-out images); RDM's external memory build.
STAGE1_TABLES = {
    "autoencoder": ("ldm", {"method": "method", "seed": "seed", "rfid": "rFID", "rclean_fid": "clean-rFID", "psnr": "PSNR dB",
                            "downsample_factor": "f", "latent_channels": "latent ch", "scale_factor": "scale",
                            "holdout_images": "held-out images", "seconds": "stage-1 s", "stage1_flops": "stage-1 FLOPs"}),
    "retrieval": ("rdm", {"method": "method", "seed": "seed", "encoder": "encoder", "database_size": "database",
                          "embedding_dim": "dim", "index": "index", "k": "k", "embed_seconds": "embed s",
                          "index_seconds": "index s", "seconds": "stage-1 s", "stage1_flops": "stage-1 FLOPs"}),
}


EXTENSION_MARK = "†"


def extensions(frame: pd.DataFrame) -> dict[str, str]:
    """{method: note} for the methods whose records say they are an extension beyond the paper (Method.extension)."""
    if "extension" not in frame:
        return {}
    marked = frame[frame["extension"].notna() & (frame["extension"].astype(str) != "")]
    return dict(zip(marked["method"], marked["extension"].astype(str)))


def mark_extensions(table: pd.DataFrame, marks: dict[str, str]) -> pd.DataFrame:
    """A copy for people to read (Markdown, LaTeX, plots) with extension methods named `name †`; CSVs keep the names."""
    if not marks or "method" not in table:
        return table
    return table.assign(method=[f"{m} {EXTENSION_MARK}" if m in marks else m for m in table["method"]])


def extension_note(marks: dict[str, str]) -> str:
    return "".join(f" {EXTENSION_MARK} {method}: {note}." for method, note in marks.items()).strip()


class ReportError(ValueError):
    """Records that cannot share one table, naming the files."""


def check_identities(frame: pd.DataFrame) -> None:
    """One row per (method, seed), and every row from the same comparison (data, backbone, budget, sampler, scoring).

    A second record for a (method, seed) or a record made under other settings would silently mix two experiments.
    """
    if "comparison_id" not in frame:
        raise ReportError(f"{frame['path'].iloc[0]} has no identities (an older record format); re-run its evaluation")
    duplicated = frame[frame.duplicated(["method", "seed"], keep=False)]
    if not duplicated.empty:
        method, seed = duplicated.iloc[0][["method", "seed"]]
        rows = duplicated[(duplicated["method"] == method) & (duplicated["seed"] == seed)]
        which = "; ".join(f"{r.path} (evaluation identity {r.eval_id})" for r in rows.itertuples())
        raise ReportError(f"{method} seed {seed} has {len(rows)} records: {which}. Keep one of them in the report")
    if frame["comparison_id"].nunique() > 1:
        groups = frame.groupby("comparison_id")["path"].apply(lambda p: ", ".join(p))
        which = "; ".join(f"identity {k}: {v}" for k, v in groups.items())
        raise ReportError("records made under different data, backbone, budget, sampler or evaluation settings cannot "
                          f"share a table ({which}); report each experiment on its own")


def load_records(paths) -> pd.DataFrame:
    """One row per record, nested version dicts flattened (train_versions_torch, metric_versions_torch_fidelity...)."""
    rows = []
    for path in paths:
        record = read_json(path)
        flat = {"path": str(path)}
        for key, value in record.items():
            if isinstance(value, dict):
                flat.update({f"{key}_{k}": v for k, v in value.items()})
            else:
                flat[key] = value
        rows.append(flat)
    frame = pd.DataFrame(rows)
    check_identities(frame)
    for column, unit, scale in (("weights", "mib", 2**20), ("prototype_bank", "kib", 2**10),
                                ("training_only", "mib", 2**20), ("external_memory", "mib", 2**20), ("peak_memory", "mib", 2**20)):
        if f"{column}_bytes" in frame:
            frame[f"{column}_{unit}"] = frame[f"{column}_bytes"] / scale
    for source, column, scale in (("flops_per_step", "gflop_per_step", 1e9), ("train_flops", "train_tflop", 1e12),
                                  ("stage1_flops", "stage1_tflop", 1e12)):
        if source in frame:
            frame[column] = pd.to_numeric(frame[source], errors="coerce") / scale
    order = {m: i for i, m in enumerate(dict.fromkeys(frame["method"]))}  # the config's order, learnt from the records
    return frame.sort_values(["method", "seed"], key=lambda c: c.map(order) if c.name == "method" else c)


def summarise(frame: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Per-seed rows plus a mean and a std row per method (numeric columns only)."""
    table = frame[[c for c in columns if c in frame]].rename(columns=columns)
    numeric = [c for c in table.columns if c not in ("method", "seed") and pd.api.types.is_numeric_dtype(table[c])]
    stats = table.groupby("method", sort=False)[numeric].agg(["mean", "std"])
    labels = [c for c in table.columns if c not in numeric and c not in ("method", "seed")]
    first = table.groupby("method", sort=False)[labels].first()  # text columns (encoder, index) repeat per seed
    summary = []
    for method in table["method"].unique():
        for stat in ("mean", "std"):
            text = {c: first.loc[method, c] for c in labels} if stat == "mean" else {}
            summary.append({"method": method, "seed": stat, **text, **{c: stats.loc[method, (c, stat)] for c in numeric}})
    table = table.astype({"seed": str})
    return pd.concat([table, pd.DataFrame(summary)], ignore_index=True)


def _markdown(table: pd.DataFrame, note: str) -> str:
    """Per-seed rows, then one 'mean ± std (n seeds)' row per method ('1 seed' alone); missing values say so."""
    per_seed = table[~table["seed"].isin(["mean", "std"])]
    means = table[table["seed"] == "mean"].set_index("method")
    stds = table[table["seed"] == "std"].set_index("method")
    rows = [per_seed.map(_fmt)]
    merged = means.copy().astype(object)
    for col in means.columns:
        if col == "seed":
            continue
        merged[col] = [f"{_fmt(m)} ± {_fmt(s)}" if isinstance(s, (int, float)) and pd.notna(s) else _fmt(m)
                       for m, s in zip(means[col], stds[col])]
    seeds = per_seed.groupby("method", sort=False).size()
    # a single seed has no spread: its row is labelled for what it is, never "mean ± std"
    merged["seed"] = [f"mean ± std ({seeds[m]} seeds)" if seeds[m] > 1 else "1 seed" for m in merged.index]
    rows.append(merged.reset_index()[per_seed.columns])
    text = pd.concat(rows, ignore_index=True)
    if "IS" in text:  # a missing Inception Score is missing (its weights), not inapplicable: the note says why
        text["IS"] = text["IS"].replace("–", "missing")
    return text.to_markdown(index=False) + f"\n\n{note}\n"


def _fmt(value) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"  # not applicable (e.g. prototypes of a method without any)
    if isinstance(value, (int, np.integer)) or float(value).is_integer() and abs(value) >= 100:
        return f"{int(value):,}"
    return f"{value:.4g}"


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")  # Δ, ±, – whatever the locale


def write_table(table: pd.DataFrame, stem: Path, note: str, markdown: str | None = None,
                marks: dict[str, str] | None = None) -> None:
    """One table as CSV (exact numbers), Markdown (per-seed rows + mean ± std, unless given) and LaTeX.

    `marks` ({method: note}) names extension methods `name †` in the Markdown and LaTeX, with the note under them."""
    with atomic_path(stem.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False)
    shown = mark_extensions(table, marks or {})
    note = f"{note} {extension_note(marks or {})}".strip()
    _write_text(stem.with_suffix(".md"), _markdown(shown, note) if markdown is None else markdown)
    if "method" in shown:  # a method name such as pdm_balanced: `_` is a LaTeX error outside math mode
        shown = shown.assign(method=shown["method"].astype(str).str.replace("_", r"\_", regex=False))
    latex = shown.to_latex(index=False, float_format="%.4g", na_rep="--").replace("Δ", r"$\Delta$")  # pdflatex-safe
    if marks:
        latex = latex.replace(EXTENSION_MARK, r"$\dagger$") + "% " + extension_note(marks).replace(EXTENSION_MARK, "dagger") + "\n"
    _write_text(stem.with_suffix(".tex"), latex)


# --- the main table: scores with intervals (issue 7) ------------------------------------------------------------
def _row_replicates(row: pd.Series, column: str) -> list:
    value = row.get(column)
    return value if isinstance(value, list) else []  # absent (bootstrap off, older record, failed run)


def _interval_cells(label: str, estimate, replicates: list, confidence: float) -> dict:
    """{label, label low, label high}: the estimate and its bias-corrected percentile bootstrap interval."""
    ok = estimate is not None and not pd.isna(estimate)
    low, high = percentile_interval(replicates, confidence, estimate=float(estimate)) if ok else (np.nan, np.nan)
    return {label: estimate if ok else np.nan, f"{label} low": low, f"{label} high": high}


def _delta_cells(row: pd.Series, reference: pd.Series | None, label: str, confidence: float) -> dict:
    """ΔFID of one (method, seed) against the reference method at the same seed, with the paired-bootstrap interval:
    replicate b of both resamples the same sample seeds, so the replicate-wise differences are paired (Efron &
    Tibshirani 1993, ch. 6); NaN for the reference itself and where either run has no score."""
    empty = {label: np.nan, f"{label} low": np.nan, f"{label} high": np.nan, "excludes 0": None}
    if reference is None or row["method"] == reference["method"] or row.get("status") != "ok" \
            or reference.get("status") != "ok" or pd.isna(row.get("fid")) or pd.isna(reference.get("fid")):
        return empty
    delta = float(row["fid"]) - float(reference["fid"])
    a, b = _row_replicates(row, "fid_bootstrap"), _row_replicates(reference, "fid_bootstrap")
    low, high = percentile_interval(paired_differences(a, b), confidence, estimate=delta) if a and b \
        else (np.nan, np.nan)
    return {label: delta, f"{label} low": low, f"{label} high": high, "excludes 0": excludes_zero(low, high)}


def _seed_row(row: pd.Series, reference: pd.Series | None, delta_label: str | None, confidence: float) -> dict:
    out = {"method": row["method"], "seed": str(row["seed"])}
    for column, (label, replicates) in INTERVAL_SCORES.items():
        out.update(_interval_cells(label, row.get(column), _row_replicates(row, replicates), confidence))
    if delta_label:
        out.update(_delta_cells(row, reference, delta_label, confidence))
    for column, label in MAIN_COLUMNS.items():
        if column not in ("method", "seed", *INTERVAL_SCORES) and column in row:
            out[label] = row[column]
    return out


def _summary_row(method: str, rows: pd.DataFrame, intervals: list[str], confidence: float) -> dict:
    """One row per method from its ok seeds only (failed runs are rows of their own, never averaged in).

    >= 2 seeds: the mean and a Student t interval across seeds (the seeds are the independent replications);
    1 seed: that seed's own value and bootstrap interval; none: an empty row marked failed.
    """
    ok = rows[rows["status"] == "ok"]
    if len(ok) == 1:
        return {**ok.iloc[0].to_dict(), "seed": "1 seed (bootstrap)"}
    if ok.empty:
        return {"method": method, "seed": "no ok seed", "status": "failed"}
    out = {"method": method, "seed": f"mean ({len(ok)} seeds)"}
    for column in ok.columns:
        if column in ("method", "seed") or column in intervals or column.endswith((" low", " high")):
            continue
        values = ok[column]
        out[column] = values.mean() if pd.api.types.is_numeric_dtype(values) and values.notna().any() \
            else values.dropna().iloc[0] if values.notna().any() else np.nan
    for label in intervals:
        values = ok[label].dropna()
        if len(values) == 1:  # e.g. the reference failed on the other seeds: that seed's bootstrap interval
            row = ok[ok[label].notna()].iloc[0]
            out.update({label: row[label], f"{label} low": row[f"{label} low"], f"{label} high": row[f"{label} high"]})
        else:
            out[label], out[f"{label} low"], out[f"{label} high"] = t_interval(values.tolist(), confidence)
    if intervals and intervals[-1].startswith("ΔFID"):
        out["excludes 0"] = excludes_zero(out[f"{intervals[-1]} low"], out[f"{intervals[-1]} high"])
    return out


def main_table(frame: pd.DataFrame, reference_method: str | None = DEFAULT_REFERENCE,
               confidence: float = DEFAULT_CONFIDENCE) -> tuple[pd.DataFrame, str | None]:
    """Per-seed rows with bootstrap intervals, then one summary row per method; paired ΔFID against the reference.

    Returns (table, delta column label or None when the reference method has no records).
    """
    methods = list(dict.fromkeys(frame["method"]))
    delta_label = f"ΔFID vs {reference_method}" if reference_method in methods else None
    references = {r["seed"]: r for _, r in frame[frame["method"] == reference_method].iterrows()} if delta_label else {}
    seed_rows = pd.DataFrame([_seed_row(r, references.get(r["seed"]), delta_label, confidence)
                              for _, r in frame.iterrows()])
    intervals = [label for label, _ in INTERVAL_SCORES.values()] + ([delta_label] if delta_label else [])
    summary = [_summary_row(m, seed_rows[seed_rows["method"] == m], intervals, confidence) for m in methods]
    table = pd.concat([seed_rows, pd.DataFrame(summary)], ignore_index=True)
    return table[seed_rows.columns], delta_label


def _with_interval(value, low, high) -> str:
    """`74.05 [70.1, 78.3]`, or the value alone where there is no interval (never a spread that does not exist)."""
    if pd.isna(low) or pd.isna(high):
        return _fmt(value)
    return f"{_fmt(value)} [{_fmt(low)}, {_fmt(high)}]"


def main_markdown(table: pd.DataFrame, delta_label: str | None, note: str) -> str:
    """Each interval score as one `value [low, high]` column; the reference's own ΔFID shows "–"."""
    intervals = [label for label, _ in INTERVAL_SCORES.values()] + ([delta_label] if delta_label else [])
    text = table.drop(columns=[f"{c} {end}" for c in intervals for end in ("low", "high")]).astype(object)
    for label in intervals:
        text[label] = [_with_interval(*values) for values in
                       zip(table[label], table[f"{label} low"], table[f"{label} high"])]
    text = text.map(_fmt)
    if "IS" in text:  # a missing Inception Score is missing (its weights), not inapplicable: the note says why
        text["IS"] = text["IS"].replace("–", "missing")
    return text.to_markdown(index=False) + f"\n\n{note}\n"


def interval_note(frame: pd.DataFrame, delta_label: str | None, reference_method: str | None,
                  confidence: float) -> str:
    """One or two sentences on what the intervals are."""
    level = f"{confidence * 100:g}%"
    replicates = frame["bootstrap_samples"].dropna() if "bootstrap_samples" in frame else pd.Series(dtype=float)
    count = int(replicates.max()) if not replicates.empty else 0
    if count:
        text = (f"Intervals are {level}: per seed, the percentile bootstrap interval over {count} resamples of the "
                "generated samples (real images fixed; bias-corrected replicates); 'mean (n seeds)' rows give the mean "
                "and a Student t interval across seeds.")
    else:
        text = (f"No bootstrap (eval.bootstrap_samples: 0): seeds have no intervals; 'mean (n seeds)' rows give the "
                f"mean and a {level} Student t interval across seeds.")
    if delta_label:
        text += (f" {delta_label}: FID minus {reference_method}'s FID at the same seed, with a paired bootstrap "
                 "interval (both methods resample the same sample seeds) or a t interval across seeds; 'excludes 0' "
                 "says whether that interval lies wholly on one side of 0.")
    elif reference_method:
        text += (f" No paired differences: the reference method '{reference_method}' is not in this table "
                 "(set report.reference_method to one of its methods).")
    return text



def budget_note(frame: pd.DataFrame) -> str:
    """What every method was given (the budget is part of the comparison identity, so one per table) and what the
    FLOP columns count."""
    if "budget" not in frame or frame["budget"].dropna().empty:
        return "Budget: train.steps (records without budget fields)."
    mode, value = frame["budget"].dropna().iloc[0], frame["budget_value"].dropna().iloc[0]
    given = {"steps": f"{_fmt(value)} optimiser steps per run",
             "flops": f"{float(value):.4g} training FLOPs per run; steps = floor(budget / FLOPs per step)",
             "seconds": f"{_fmt(value)} training seconds per run, steps = floor(budget / seconds per step timed on "
                        "this machine (not reproducible across machines or runs))"}[mode]
    return (f"Budget ({mode}), the same for every method: {given}. FLOPs are torch.utils.flop_counter's (matmuls, "
            "convolutions, attention; 2 per multiply-add; forward + backward) on one real training step, f_phi and "
            "per-step stage-1 encoders included; train TFLOP = steps x FLOPs per step; stage-1 TFLOP = the stage-1 job's "
            "torch ops (LDM's rFID measurement and FAISS not counted), beside, not in, the budget.")


def stage1_tables(stage1_paths, tables_dir: Path) -> list[str]:
    """Tables of the stage-1 records (LDM's autoencoder, RDM's database); returns the names written."""
    records = [read_json(p) for p in stage1_paths]
    written = []
    for name, (method, columns) in STAGE1_TABLES.items():
        rows = pd.DataFrame([r for r in records if r.get("method") == method])
        if rows.empty:
            continue
        notes = {"autoencoder": "Reconstructions of held-out images (never trained on); rFID is roughly a floor for "
                                "LDM's FID (other reference images: held-out here, training images there).",
                 "retrieval": "The database and index are RDM's external memory; their build time counts in its cost."}
        write_table(summarise(rows, columns), tables_dir / name, notes[name])
        written.append(name)
    return written


def report(record_paths, tables_dir, plots_dir, grids=(), stage1_paths=(), reference_method=DEFAULT_REFERENCE,
           confidence=DEFAULT_CONFIDENCE) -> pd.DataFrame:
    """Tables and plots from result records; `grids` are the sample grids (samples/{method}/seed{seed}/grid.png).

    `reference_method` and `confidence` come from the config's `report:` section: the method paired differences are
    taken against (None: no paired columns) and the level of every interval.
    """
    tables_dir, plots_dir = Path(tables_dir), Path(plots_dir)
    frame = load_records(record_paths)
    with atomic_path(tables_dir / "results.csv") as tmp:
        frame.drop(columns=[c for c in BOOTSTRAP_LISTS if c in frame]).to_csv(tmp, index=False)

    is_note = ""
    if "is_missing" in frame and frame["is_missing"].notna().any():
        is_note = f"IS missing: {frame['is_missing'].dropna().iloc[0]}"
    scored = frame[frame["status"] == "ok"]
    if "clean_fid" in frame and not scored.empty and scored["clean_fid"].isna().all():  # eval.clean_fid: false
        frame = frame.drop(columns="clean_fid")
        is_note = f"clean-FID off (eval.clean_fid: false). {is_note}"
    extractor = ""
    if not scored.empty:
        first = scored.iloc[0]
        extractor = (f"Scores: {first['extractor']} (tensors sha256 {str(first['extractor_tensors_sha256'])[:12]}…), "
                     f"{int(first['num_samples'])} samples vs {int(first['num_real'])} real images. KID is the mean over "
                     f"subsets. CPU: {first['cpu_model']}.")
    failures = "".join(f" {r.method} seed {r.seed} failed: {r.failure}." for r in frame[frame["status"] != "ok"].itertuples())
    table, delta_label = main_table(frame, reference_method, confidence)
    marks = extensions(frame)  # methods beyond the paper (ablations of ours), marked wherever people read the tables
    note = f"{interval_note(frame, delta_label, reference_method, confidence)} {extractor} {is_note}{failures}"
    main_note = f"{note.strip()} {extension_note(marks)}".strip()
    write_table(table, tables_dir / "main", note.strip(), marks=marks,
                markdown=main_markdown(mark_extensions(table, marks), delta_label, main_note))
    write_table(summarise(frame, EFFICIENCY_COLUMNS), tables_dir / "efficiency",
                f"{budget_note(frame)} Storage is measured from the files on disk (MiB = 2^20 bytes). Weights = what "
                "generation loads (LDM: U-Net + decoder); training-only = f_phi; external memory = RDM's database + "
                "index + encoder weights.",
                marks=marks)
    written = stage1_tables(stage1_paths, tables_dir)
    for name in ["main", "efficiency", *written]:  # inline tables in `snakemake --report` (it shows .html, not .csv)
        write_html_twin(tables_dir / f"{name}.md")
    plot_all(frame, plots_dir, grids)
    return frame


def plot_all(frame: pd.DataFrame, plots_dir: Path, grids=()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    plots_dir.mkdir(parents=True, exist_ok=True)
    sns.set_theme(style="whitegrid")
    marks = extensions(frame)
    methods = list(dict.fromkeys(frame["method"]))  # the grids' file names carry the plain names
    frame = mark_extensions(frame, marks)  # plots name extension methods `name †`, with the note below the figure
    for grid in map(Path, grids):  # .../samples/{method}/seed{seed}/grid.png
        with atomic_path(plots_dir / f"samples_{grid.parent.parent.name}_{grid.parent.name}.png") as tmp:
            shutil.copyfile(grid, tmp)
    if grids:  # every method's grid in one labelled figure (the per-method copies stay for the report's gallery)
        dataset = str(frame["dataset"].iloc[0]) if "dataset" in frame else "this experiment's data"
        experiment_sample_figure(plots_dir, plots_dir / "samples.png", dataset, methods)
    metrics = [(c, label) for c, label in (("fid", "FID ↓"), ("kid_mean", "KID ↓"), ("clean_fid", "clean-FID ↓")) if c in frame]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2))
    for ax, (column, label) in zip(np.atleast_1d(axes), metrics):
        sns.barplot(data=frame, x="method", y=column, ax=ax, errorbar="sd", hue="method", legend=False)
        sns.stripplot(data=frame, x="method", y=column, ax=ax, color="black", size=4)
        ax.set(title=label, xlabel="", ylabel="")
        ax.tick_params(axis="x", labelrotation=35)  # 7 method names side by side overlapped when horizontal
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
    fig.tight_layout()
    if marks:
        fig.text(0.01, 0.005, extension_note(marks), fontsize=6, ha="left", va="bottom")
        fig.subplots_adjust(bottom=0.2)
    _save_figure(fig, plots_dir / "fid_comparison.png")

    if "fid" not in frame:  # every run failed: nothing to place on the cost plot
        plt.close("all")
        return
    fig, ax = plt.subplots(figsize=(7, 3.5))
    size = "weights + memory (MiB)"
    cost = frame.assign(**{size: ((frame["weights_bytes"] + frame["external_memory_bytes"]) / 2**20).round(2)})
    # brief: a few round sizes in the legend, not one 16-digit float per run; the legend sits beside the axes
    sns.scatterplot(data=cost, x="device_hours", y="fid", hue="method", size=size, sizes=(40, 400), legend="brief", ax=ax,
                    alpha=0.75, edgecolor="black", linewidth=0.5)  # see-through, outlined: coinciding runs stay visible
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=7)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(5))  # a few ticks: eleven 6-digit device-hour labels ran into each other
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))  # 1e-3 as an offset, not 0.0004 on every tick
    ax.set(xlabel="device-hours (stage 1 + training)", ylabel="FID ↓", title="quality vs cost")
    fig.tight_layout()
    if marks:
        fig.text(0.01, 0.005, extension_note(marks), fontsize=5, ha="left", va="bottom")
        fig.subplots_adjust(bottom=0.22)
    _save_figure(fig, plots_dir / "fid_vs_cost.png")

    plt.close("all")


def _save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
