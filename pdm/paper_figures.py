"""Sample grids side by side: one labelled figure, rows = methods, columns = datasets (or one row of methods for a
single experiment), made from the grid.png files the sample rule writes (never from the samples themselves)."""

from __future__ import annotations

import re
from pathlib import Path

from pdm.io import atomic_path

GRID_NAME = re.compile(r"samples_(?P<method>.+)_seed(?P<seed>\d+)\.png")  # plots/samples_{method}_seed{seed}.png


def first_seed_grids(plots_dir: str | Path) -> dict[str, Path]:
    """{method: plots/samples_{method}_seed{lowest seed}.png} of one experiment, in file-name order."""
    found: dict[str, tuple[int, Path]] = {}
    for path in sorted(Path(plots_dir).glob("samples_*_seed*.png")):
        match = GRID_NAME.fullmatch(path.name)
        if match and (match["method"] not in found or int(match["seed"]) < found[match["method"]][0]):
            found[match["method"]] = (int(match["seed"]), path)
    return {method: path for method, (_, path) in found.items()}


def _figure(shape: tuple[int, int], aspect: float = 1.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cell = 2.4  # inches per grid: a 4x4 grid of 16x16 images stays legible, a 10x10 of 32x32 too at dpi 150
    rows, columns = shape
    # aspect = grid height / width: a 2x8 grid of the ci run gets a short row, not a square of white space
    return plt.subplots(rows, columns, figsize=(cell * columns + 0.8, (cell * aspect + 0.4) * rows + 0.6), squeeze=False)


def _draw(ax, grid: Path | None) -> None:
    """The grid image, or an empty frameless cell that says 'not run' (a failed run, or a method not run there)."""
    import matplotlib.image as mpimg

    ax.set_xticks([])
    ax.set_yticks([])
    if grid is not None and Path(grid).exists():
        image = mpimg.imread(grid)
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
    else:
        ax.text(0.5, 0.5, "not run", ha="center", va="center", fontsize=10, color="grey", transform=ax.transAxes)
        for spine in ax.spines.values():
            spine.set_visible(False)


def _save(fig, path: str | Path, title: str) -> None:
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # the title above the column labels, never on them
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, format="png")
    plt.close(fig)


def experiment_sample_figure(plots_dir: str | Path, path: str | Path, dataset: str, methods: list[str] | None = None,
                             per_row: int = 4) -> None:
    """One experiment: every method's first-seed grid, `per_row` to a row, each titled with its method."""
    grids = first_seed_grids(plots_dir)
    if not grids:
        raise FileNotFoundError(f"{plots_dir} has no samples_{{method}}_seed{{seed}}.png; run the report rule first")
    methods = [m for m in methods or grids if m in grids]
    import matplotlib.image as mpimg

    columns = min(per_row, len(methods))
    height, width = mpimg.imread(grids[methods[0]]).shape[:2]
    fig, axes = _figure((-(-len(methods) // columns), columns), aspect=height / width)
    for ax, method in zip(axes.flat, methods):
        _draw(ax, grids[method])
        ax.set_title(method, fontsize=12)
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    _save(fig, path, f"samples on {dataset} (first seed of each method)")


def datasets_sample_figure(plots_dirs: dict[str, Path], path: str | Path, methods: list[str] | None = None) -> None:
    """Several experiments ({dataset: plots dir}): rows = methods, columns = datasets, labelled on the left and top."""
    per_dataset = {dataset: first_seed_grids(d) for dataset, d in plots_dirs.items()}
    methods = methods or list(dict.fromkeys(m for grids in per_dataset.values() for m in grids))
    fig, axes = _figure((len(methods), len(per_dataset)))
    for i, method in enumerate(methods):
        for j, (dataset, grids) in enumerate(per_dataset.items()):
            _draw(axes[i][j], grids.get(method))
            if i == 0:
                axes[i][j].set_title(dataset, fontsize=12)
            if j == 0:
                axes[i][j].set_ylabel(method, fontsize=12)
    _save(fig, path, "samples per dataset and method (first seed)")
