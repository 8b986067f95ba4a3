"""Aggregate the per-job JSON records into tidy pandas tables (CSV, Markdown, LaTeX) and seaborn plots.

Tables and plots read the concatenated records only (`results.csv`), never the jobs' internals.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from pdm.io import atomic_path, read_json

# column in the records -> column in the paper-style tables
MAIN_COLUMNS = {
    "method": "method",
    "seed": "seed",
    "fid": "FID",
    "kid_mean": "KID",
    "clean_fid": "clean-FID",
    "is_mean": "IS",
    "prototypes_used": "prototypes used",
    "parameters_sampling": "params",
    "status": "status",
}  # scores only: timings live in the efficiency table, so main.csv is bitwise reproducible on one machine
EFFICIENCY_COLUMNS = {
    "method": "method",
    "seed": "seed",
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
                            "holdout_images": "held-out images", "seconds": "stage-1 s"}),
    "retrieval": ("rdm", {"method": "method", "seed": "seed", "encoder": "encoder", "database_size": "database",
                          "embedding_dim": "dim", "index": "index", "k": "k", "embed_seconds": "embed s",
                          "index_seconds": "index s", "seconds": "stage-1 s"}),
}


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
    """Per-seed rows, then one 'mean ± std' row per method; missing values say so."""
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
    merged["seed"] = "mean ± std"
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
        tmp.write_text(text)


def write_table(table: pd.DataFrame, stem: Path, note: str) -> None:
    """One table as CSV (exact numbers), Markdown (per-seed rows + mean ± std) and LaTeX."""
    with atomic_path(stem.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False)
    _write_text(stem.with_suffix(".md"), _markdown(table, note))
    _write_text(stem.with_suffix(".tex"), table.to_latex(index=False, float_format="%.4g", na_rep="--"))


def stage1_tables(stage1_paths, tables_dir: Path) -> list[str]:
    """Tables of the stage-1 records (LDM's autoencoder, RDM's database); returns the names written."""
    records = [read_json(p) for p in stage1_paths]
    written = []
    for name, (method, columns) in STAGE1_TABLES.items():
        rows = pd.DataFrame([r for r in records if r.get("method") == method])
        if rows.empty:
            continue
        notes = {"autoencoder": "Reconstructions of held-out images (never trained on); LDM's FID cannot beat its rFID.",
                 "retrieval": "The database and index are RDM's external memory; their build time counts in its cost."}
        write_table(summarise(rows, columns), tables_dir / name, notes[name])
        written.append(name)
    return written


def report(record_paths, tables_dir, plots_dir, grids=(), stage1_paths=()) -> pd.DataFrame:
    """Tables and plots from result records; `grids` are the sample grids (samples/{method}/seed{seed}/grid.png)."""
    tables_dir, plots_dir = Path(tables_dir), Path(plots_dir)
    frame = load_records(record_paths)
    with atomic_path(tables_dir / "results.csv") as tmp:
        frame.to_csv(tmp, index=False)

    is_note = ""
    if "is_missing" in frame and frame["is_missing"].notna().any():
        is_note = f"IS missing: {frame['is_missing'].dropna().iloc[0]}"
    scored = frame[frame["status"] == "ok"]
    extractor = ""
    if not scored.empty:
        first = scored.iloc[0]
        extractor = (f"Scores: {first['extractor']} (tensors sha256 {str(first['extractor_tensors_sha256'])[:12]}…), "
                     f"{int(first['num_samples'])} samples vs {int(first['num_real'])} real images. KID is the mean over "
                     f"subsets. CPU: {first['cpu_model']}.")
    failures = "".join(f" {r.method} seed {r.seed} failed: {r.failure}." for r in frame[frame["status"] != "ok"].itertuples())
    for name, columns, note in (("main", MAIN_COLUMNS, f"{extractor} {is_note}{failures}".strip()),
                                ("efficiency", EFFICIENCY_COLUMNS, "Storage is measured from the files on disk (MiB = 2^20 bytes). Weights = what generation loads (LDM: U-Net + decoder); training-only = f_phi; external memory = RDM's database + index + encoder weights.")):
        write_table(summarise(frame, columns), tables_dir / name, note)
    stage1_tables(stage1_paths, tables_dir)
    plot_all(frame, plots_dir, grids)
    return frame


def plot_all(frame: pd.DataFrame, plots_dir: Path, grids=()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    plots_dir.mkdir(parents=True, exist_ok=True)
    sns.set_theme(style="whitegrid")
    for grid in map(Path, grids):  # .../samples/{method}/seed{seed}/grid.png
        with atomic_path(plots_dir / f"samples_{grid.parent.parent.name}_{grid.parent.name}.png") as tmp:
            shutil.copyfile(grid, tmp)
    metrics = [(c, label) for c, label in (("fid", "FID ↓"), ("kid_mean", "KID ↓"), ("clean_fid", "clean-FID ↓")) if c in frame]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2))
    for ax, (column, label) in zip(np.atleast_1d(axes), metrics):
        sns.barplot(data=frame, x="method", y=column, ax=ax, errorbar="sd", hue="method", legend=False)
        sns.stripplot(data=frame, x="method", y=column, ax=ax, color="black", size=4)
        ax.set(title=label, xlabel="", ylabel="")
    fig.tight_layout()
    _save_figure(fig, plots_dir / "fid_comparison.png")

    if "fid" not in frame:  # every run failed: nothing to place on the cost plot
        plt.close("all")
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    cost = frame.assign(total_mb=(frame["weights_bytes"] + frame["external_memory_bytes"]) / 2**20)
    sns.scatterplot(data=cost, x="device_hours", y="fid", hue="method", size="total_mb", sizes=(40, 400), ax=ax)
    ax.set(xlabel="device-hours (stage 1 + training)", ylabel="FID ↓", title="quality vs cost (size: weights + memory, MB)")
    fig.tight_layout()
    _save_figure(fig, plots_dir / "fid_vs_cost.png")

    plt.close("all")


def _save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
