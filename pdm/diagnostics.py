"""Prototype diagnostics of a trained PDM-family run (issue 7): is the prototype bank used, and what does f_phi learn?

For every method whose class has `has_prototypes` (pdm, spdm, pdm_balanced), from its saved weights and train.log:

    usage.png         how many training images each prototype gets: the bank's usage_counts (the generation prior,
                      written by finalize) beside the nearest-prototype assignment recomputed here (eval mode)
    entropy.png       the batch assignment's entropy (nats; 0 = collapse onto one prototype, log K = even) and the
                      number of distinct prototypes per batch, as logged over training (PDM.context)
    pca.png           f_phi's features of the training split in their first two principal components, coloured by
                      class, with the prototypes projected into the same plane (the paper's figure)
    diagnostics.json  the numbers behind them, plus NMI / purity of the assignments against the class labels

Pure functions below; `diagnose` is the one entry the CLI and the workflow call.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pdm.io import atomic_path, write_json

PLOTS = ("usage.png", "entropy.png", "pca.png")
LOG_LINE = re.compile(r"\bstep (\d+) lr \S+ (.*)$")  # pdm.trainer: "step N lr X key value key value ..."


# --- pure functions ----------------------------------------------------------------------------------------------
@torch.no_grad()
def features(method, dataset, batch_size: int = 256) -> torch.Tensor:
    """f_phi(x_0) of every training image, in dataset order, with f_phi in eval mode (BatchNorm running stats)."""
    was_training = method.f_phi.training
    method.f_phi.eval()
    parts = [z.cpu() for z, _ in method.training_set_features(dataset, batch_size)]  # on the method's device
    method.f_phi.train(was_training)
    return torch.cat(parts)  # (N, d)


def usage_histogram(assigned, num_prototypes: int) -> np.ndarray:
    """(K,) how many images each prototype is assigned."""
    return np.bincount(np.asarray(assigned, dtype=np.int64), minlength=num_prototypes)[:num_prototypes]


def histogram_entropy(counts) -> float:
    """Entropy (nats) of a usage histogram; 0 for a collapse onto one prototype, log K for even usage."""
    p = np.asarray(counts, dtype=np.float64)
    p = p[p > 0] / p.sum() if p.sum() > 0 else np.zeros(0)
    return float(max(0.0, -(p * np.log(p)).sum()))  # never -0.0


def pca_2d(z: np.ndarray, prototypes: np.ndarray):
    """Two principal components of the features; the prototypes projected into the same plane.

    Returns (z_2d (N, 2), prototypes_2d (K, 2), explained variance ratio (2,)).
    """
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, svd_solver="full").fit(z)
    return pca.transform(z), pca.transform(prototypes), pca.explained_variance_ratio_


def cluster_scores(assigned, labels) -> dict[str, float]:
    """Agreement of an assignment with the class labels: NMI (sklearn, arithmetic mean) and purity."""
    from sklearn.metrics import normalized_mutual_info_score

    assigned, labels = np.asarray(assigned), np.asarray(labels)
    purity = sum(np.bincount(labels[assigned == k]).max() for k in np.unique(assigned)) / len(labels)
    return {"nmi": float(normalized_mutual_info_score(labels, assigned)), "purity": float(purity)}


def read_train_log(path: str | Path) -> pd.DataFrame:
    """The trainer's logged window means, one row per logged step (a resumed run's repeated steps: the last wins)."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        match = LOG_LINE.search(line)
        if not match:
            continue
        tokens = match.group(2).split()
        row = {"step": int(match.group(1))}
        for key, value in zip(tokens[::2], tokens[1::2]):
            try:
                row[key] = float(value)
            except ValueError:
                pass
        rows.append(row)
    if not rows:
        return pd.DataFrame({"step": []})
    return pd.DataFrame(rows).drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


# --- plots -------------------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    return plt, sns


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")


def plot_usage(path: Path, title: str, histograms: dict[str, np.ndarray]) -> None:
    plt, sns = _pyplot()
    k = len(next(iter(histograms.values())))
    frame = pd.DataFrame([{"prototype": i, "images": int(c), "count": name}
                          for name, counts in histograms.items() for i, c in enumerate(counts)])
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * k + 2.5), 3.4))
    sns.barplot(data=frame, x="prototype", y="images", hue="count", ax=ax)
    ax.set(title=title, xlabel="prototype k", ylabel="training images")
    ax.legend(fontsize=7, title=None)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_entropy(path: Path, title: str, log: pd.DataFrame, num_prototypes: int) -> None:
    plt, _ = _pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    series = {"assignment_entropy": "training assignment", "nearest_entropy": "nearest prototype"}
    counts = {"prototypes_in_batch": "training assignment", "nearest_in_batch": "nearest prototype"}
    for column, label in series.items():
        if column in log:
            ax.plot(log["step"], log[column], marker=".", label=label)
    ax.axhline(math.log(num_prototypes), color="grey", ls="--", lw=1, label=f"log K = {math.log(num_prototypes):.2f}")
    ax.set(xlabel="training step", ylabel="batch assignment entropy (nats)")
    fig.suptitle(title, fontsize=11)
    ax.legend(fontsize=7)
    for column, label in counts.items():
        if column in log:
            ax2.plot(log["step"], log[column], marker=".", label=label)
    ax2.axhline(num_prototypes, color="grey", ls="--", lw=1, label=f"K = {num_prototypes}")
    ax2.set(xlabel="training step", ylabel="distinct prototypes per batch", ylim=(0, num_prototypes + 0.5))
    ax2.legend(fontsize=7)
    if not any(c in log for c in (*series, *counts)):
        ax.text(0.5, 0.5, "train.log has no assignment logs\n(trained before they existed)", ha="center",
                transform=ax.transAxes)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    _save(fig, path)
    plt.close(fig)


def plot_pca(path: Path, title: str, z_2d: np.ndarray, prototypes_2d: np.ndarray, labels, usage: np.ndarray,
             explained: np.ndarray) -> None:
    """Two panels of the same plane: zoomed on the features (left; prototypes outside it are left out of view) and
    the whole extent with every prototype (right). A collapsed f_phi is a dot beside the prototypes on the right."""
    plt, sns = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.4))
    hue = np.asarray(labels) if labels is not None else None
    used = usage > 0
    low, high = np.percentile(z_2d, 0.5, axis=0), np.percentile(z_2d, 99.5, axis=0)
    pad = np.maximum((high - low) * 0.08, 1e-6)
    for ax, zoom in zip(axes, (True, False)):
        sns.scatterplot(x=z_2d[:, 0], y=z_2d[:, 1], hue=hue, palette="tab10" if hue is not None else None, s=8,
                        alpha=0.6, linewidth=0, ax=ax, legend=("full" if hue is not None else False) if not zoom else False)
        ax.scatter(prototypes_2d[used, 0], prototypes_2d[used, 1], marker="*", s=220, c="black", edgecolors="white",
                   label="prototype (used)", zorder=3)
        ax.scatter(prototypes_2d[~used, 0], prototypes_2d[~used, 1], marker="X", s=90, c="white", edgecolors="black",
                   label="prototype (unused)", zorder=3)
        for k, (x, y) in enumerate(prototypes_2d):
            if not zoom or (low[0] - pad[0] <= x <= high[0] + pad[0] and low[1] - pad[1] <= y <= high[1] + pad[1]):
                ax.annotate(str(k), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8, weight="bold")
        ax.set(xlabel=f"PC1 ({explained[0]:.0%} of the feature variance)", ylabel=f"PC2 ({explained[1]:.0%})")
        if zoom:
            ax.set(xlim=(low[0] - pad[0], high[0] + pad[0]), ylim=(low[1] - pad[1], high[1] + pad[1]),
                   title="features (zoomed to them)")
        else:
            ax.set(title="features and every prototype")
            ax.legend(fontsize=7, title="class" if hue is not None else None, ncols=2, loc="center left",
                      bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    _save(fig, path)
    plt.close(fig)


# --- the step ----------------------------------------------------------------------------------------------------
def diagnose(cfg, method: str, seed: int, model_dir: str | Path, out_dir: str | Path) -> dict:
    """Load a trained run of a prototype method, write usage.png, entropy.png, pca.png and diagnostics.json."""
    from pdm.checkpoint import load_trained, read_train_record
    from pdm.data import load_dataset
    from pdm.methods.registry import get_method_class
    from pdm.prototypes import nearest_prototype
    from pdm.runtime import provenance, setup_job

    if not getattr(get_method_class(method), "has_prototypes", False):
        raise ValueError(f"method '{method}' has no prototypes (its class does not set has_prototypes); the prototype "
                         "diagnostics apply to pdm, spdm and the like only")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_record = read_train_record(cfg, method, seed, model_dir)
    device = setup_job(cfg)
    model, _ = load_trained(cfg, method, model_dir, device, seed=seed)
    model.eval()
    dataset = load_dataset(cfg.data)
    labels = dataset.labels.long() if dataset.labels is not None else None

    z = features(model, dataset)  # (N, d)
    prototypes = model.bank.prototypes.detach().cpu()  # (K, d)
    k = prototypes.shape[0]
    nearest = nearest_prototype(z, prototypes).numpy()  # (N,) PDM's rule with the final weights
    assigned = model.assign(z.to(device), labels.to(device) if labels is not None else None).cpu().numpy()
    bank_usage = model.bank.usage_counts.detach().cpu().numpy().round().astype(np.int64)
    nearest_usage = usage_histogram(nearest, k)
    log = read_train_log(model_dir / "train.log") if (model_dir / "train.log").exists() else read_train_log("/dev/null")
    z_2d, p_2d, explained = pca_2d(z.numpy().astype(np.float64), prototypes.numpy().astype(np.float64))

    extension = getattr(model, "extension", None)
    tag = f"{method} seed{seed}" + (" (extension beyond the paper)" if extension else "")
    histograms = {"usage_counts (generation prior)": bank_usage, "nearest prototype, recomputed": nearest_usage}
    plot_usage(out_dir / "usage.png",
               f"{tag}: {int((bank_usage > 0).sum())}/{k} in the prior, {int((nearest_usage > 0).sum())}/{k} nearest",
               histograms)
    plot_entropy(out_dir / "entropy.png", f"{tag}: assignment over training", log, k)
    plot_pca(out_dir / "pca.png", f"{tag}: f_phi features (PCA)", z_2d, p_2d, labels.numpy() if labels is not None
             else None, bank_usage, explained)

    last = log.iloc[-1] if len(log) else pd.Series(dtype=float)
    record = {
        **provenance(), "method": method, "seed": seed, "train_id": train_record["train_id"], "extension": extension,
        "num_images": len(dataset), "num_prototypes": k, "log_k": math.log(k),
        "usage_counts": bank_usage.tolist(), "prototypes_used": int((bank_usage > 0).sum()),
        "usage_entropy": histogram_entropy(bank_usage),
        "nearest_usage_counts": nearest_usage.tolist(), "prototypes_used_nearest": int((nearest_usage > 0).sum()),
        "nearest_usage_entropy": histogram_entropy(nearest_usage),
        "final_assignment_entropy": float(last["assignment_entropy"]) if "assignment_entropy" in last else None,
        "final_prototypes_in_batch": float(last["prototypes_in_batch"]) if "prototypes_in_batch" in last else None,
        "pca_explained_variance_ratio": [float(v) for v in explained],
        "feature_norm_mean": float(z.norm(dim=1).mean()), "prototype_norm_mean": float(prototypes.norm(dim=1).mean()),
    }
    if labels is not None:
        record["nearest_vs_labels"] = cluster_scores(nearest, labels.numpy())
        record["assignment_vs_labels"] = cluster_scores(assigned, labels.numpy())
    write_json(out_dir / "diagnostics.json", record)
    return record
