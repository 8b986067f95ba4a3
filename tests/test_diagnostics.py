"""Prototype diagnostics (issue 7): assignment entropy logs, the Sinkhorn-Knopp ablation (pdm_balanced, an extension
beyond the paper) and the diagnose step on a tiny trained PDM."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from pdm.methods.base import DataInfo
from pdm.methods.registry import get_method_class
from pdm.prototypes import assignment_entropy, nearest_prototype, sinkhorn_assignment, unsupervised_prototype_loss

INFO = DataInfo(channels=1, resolution=16, num_classes=4)
TINY = {"train": {"steps": 6, "batch_size": 8, "warmup_steps": 1, "checkpoint_every": 3, "log_every": 2},
        "data": {"max_images": 40}}


def collapsed_batch(batch=64, k=10, dim=8, spread=0.3):
    """A batch whose every feature is nearest to prototype 0: PDM's rule collapses onto one prototype."""
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.randn(k, dim, generator=generator)
    z = prototypes[0] + spread * torch.randn(batch, dim, generator=generator)
    return z, prototypes


def test_sinkhorn_spreads_a_batch_that_nearest_prototype_collapses():
    z, prototypes = collapsed_batch()
    distances = torch.cdist(z, prototypes)
    assert torch.bincount(nearest_prototype(z, prototypes), minlength=10).tolist() == [64] + [0] * 9
    counts = torch.bincount(sinkhorn_assignment(distances, epsilon=0.05, iterations=3), minlength=10)
    assert (counts > 0).all() and counts.max() <= 2.5 * 64 / 10  # every prototype used, near-equal column sums
    entropy, distinct = assignment_entropy(sinkhorn_assignment(distances), 10)
    assert entropy > 0.9 * math.log(10) and distinct == 10


def test_sinkhorn_is_scale_free_and_stable_in_the_log_domain():
    z, prototypes = collapsed_batch()
    distances = torch.cdist(z, prototypes)
    assigned = sinkhorn_assignment(distances)
    for scale in (1e-3, 1e4):  # exp(-d / eps) would under- or overflow here without the log domain + normalisation
        assert torch.equal(sinkhorn_assignment(distances * scale), assigned)


def test_assignment_entropy_of_hand_made_batches():
    entropy, distinct = assignment_entropy(torch.tensor([0, 0, 1, 1]), 4)
    assert entropy.item() == pytest.approx(math.log(2)) and distinct.item() == 2
    entropy, distinct = assignment_entropy(torch.tensor([3, 3, 3]), 4)
    assert entropy.item() == 0 and distinct.item() == 1  # collapse
    entropy, _ = assignment_entropy(torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]), 4)
    assert entropy.item() == pytest.approx(math.log(4))


def test_pdm_logs_its_assignment_and_keeps_the_paper_loss(make_cfg):
    cfg = make_cfg()
    torch.manual_seed(0)
    method = get_method_class("pdm")(cfg, INFO)
    x0 = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    t = torch.zeros(6, dtype=torch.long)
    tokens, aux, logs = method.context(x0, None, t, torch.Generator())
    z = method.f_phi(x0)  # train mode: the same batch statistics, the same features
    nearest = nearest_prototype(z, method.bank.prototypes)
    entropy, distinct = assignment_entropy(nearest, 4)
    assert logs["assignment_entropy"].item() == entropy.item() and logs["prototypes_in_batch"].item() == distinct.item()
    assert not logs["assignment_entropy"].requires_grad
    o = cfg.method_options("pdm")
    reference, _ = unsupervised_prototype_loss(z, method.bank.prototypes, o["tau"], o["alpha"], o["beta"])  # no targets
    assert torch.equal(aux, reference)  # the hook leaves PDM's loss bit-identical


def test_spdm_logs_the_label_entropy(make_cfg):
    torch.manual_seed(0)
    method = get_method_class("spdm")(make_cfg(), INFO)
    x0, labels = torch.zeros(4, 1, 16, 16), torch.tensor([0, 0, 1, 1])
    _, _, logs = method.context(x0, labels, torch.zeros(4, dtype=torch.long), torch.Generator())
    assert logs["assignment_entropy"].item() == pytest.approx(math.log(2)) and logs["prototypes_in_batch"].item() == 2


def test_pdm_balanced_trains_on_the_equal_partition_and_says_it_is_an_extension(make_cfg):
    cfg = make_cfg(replace_methods={"pdm_balanced": {"num_prototypes": 10}})
    method_class = get_method_class("pdm_balanced")
    for text in (method_class.__doc__, method_class.description, method_class.extension):
        assert "extension beyond the paper (not in arXiv 2508.09922)" in " ".join(text.split())
    assert get_method_class("pdm").extension is None and method_class.has_prototypes
    torch.manual_seed(0)
    method = method_class(cfg, INFO)
    z, prototypes = collapsed_batch(dim=method.bank.prototypes.shape[1])
    with torch.no_grad():
        method.bank.prototypes.copy_(prototypes)
    assert (torch.bincount(method.train_assign(z, None), minlength=10) > 0).all()
    assert torch.equal(method.assign(z, None), nearest_prototype(z, prototypes))  # generation-side rule unchanged
    assert method.record()["extension"].startswith("extension beyond the paper")


def test_read_train_log_parses_window_means(tmp_path):
    from pdm.diagnostics import read_train_log

    (tmp_path / "train.log").write_text(
        "2026-01-01 00:00:00,000 INFO training pdm seed 0 ...\n"
        "2026-01-01 00:00:01,000 INFO step 2 lr 0.001 loss 1.5 assignment_entropy 0.0000 prototypes_in_batch 1.0000\n"
        "2026-01-01 00:00:02,000 INFO step 4 lr 0.001 loss 1.2 assignment_entropy 0.6931 prototypes_in_batch 2.0000\n"
        "2026-01-01 00:00:03,000 INFO step 4 lr 0.001 loss 1.1 assignment_entropy 0.5000 prototypes_in_batch 2.0000\n")
    log = read_train_log(tmp_path / "train.log")
    assert log["step"].tolist() == [2, 4] and log["assignment_entropy"].tolist() == [0.0, 0.5]  # resumed: last wins


def test_cluster_scores():
    from pdm.diagnostics import cluster_scores, histogram_entropy

    assert cluster_scores([0, 0, 1, 1], [5, 5, 7, 7]) == {"nmi": 1.0, "purity": 1.0}
    assert cluster_scores([0, 0, 0, 0], [5, 5, 7, 7]) == {"nmi": 0.0, "purity": 0.5}  # collapse: no information
    assert histogram_entropy([3, 0, 0]) == 0 and histogram_entropy([2, 2]) == pytest.approx(math.log(2))


@pytest.mark.parametrize("name", ["pdm", "pdm_balanced"])
def test_diagnose_a_tiny_trained_run(make_cfg, tmp_path, name):
    from pdm.diagnostics import PLOTS, diagnose
    from pdm.trainer import train

    cfg = make_cfg(TINY, replace_methods={name: {"num_prototypes": 4}})
    train(cfg, name, 0, tmp_path / "model")
    record = diagnose(cfg, name, 0, tmp_path / "model", tmp_path / "out")
    for plot in PLOTS:
        assert (tmp_path / "out" / plot).stat().st_size > 5000
    saved = json.loads((tmp_path / "out" / "diagnostics.json").read_text())
    assert saved["usage_counts"] == record["usage_counts"] and len(saved["usage_counts"]) == 4
    assert sum(saved["usage_counts"]) == sum(saved["nearest_usage_counts"]) == saved["num_images"] == 36
    if name == "pdm":  # the bank's counts are the nearest prototype with the final weights, recomputed the same
        assert saved["usage_counts"] == saved["nearest_usage_counts"] and saved["extension"] is None
    else:
        assert saved["extension"].startswith("extension beyond the paper")
    assert 1 <= saved["prototypes_used"] <= 4 and 0 <= saved["final_assignment_entropy"] <= math.log(4) + 1e-6
    assert len(saved["pca_explained_variance_ratio"]) == 2 and 0 < sum(saved["pca_explained_variance_ratio"]) <= 1
    assert 0 <= saved["nearest_vs_labels"]["nmi"] <= 1 and 0 < saved["nearest_vs_labels"]["purity"] <= 1


def test_diagnose_refuses_a_method_without_prototypes(make_cfg, tmp_path):
    from pdm.diagnostics import diagnose

    with pytest.raises(ValueError, match="has no prototypes"):
        diagnose(make_cfg(), "ddpm", 0, tmp_path, tmp_path / "out")


def test_report_marks_extension_methods(tmp_path):
    from test_report import record, write

    from pdm.report import report

    note = "extension beyond the paper (not in arXiv 2508.09922): balanced"
    paths = write(tmp_path, [record("pdm", 0, fid=40.0, extension=None, prototypes_used=1),
                             record("pdm_balanced", 0, fid=38.0, extension=note, prototypes_used=10,
                                    prototypes_used_nearest=3)])
    report(paths, tmp_path / "tables", tmp_path / "plots", reference_method="pdm")
    main = pd.read_csv(tmp_path / "tables" / "main.csv")
    assert set(main["method"]) == {"pdm", "pdm_balanced"}  # the CSV keeps the names (regress keys on them)
    markdown = (tmp_path / "tables" / "main.md").read_text()
    assert "pdm_balanced †" in markdown and f"† pdm_balanced: {note}" in markdown and "pdm †" not in markdown
    assert "pdm_balanced †" in (tmp_path / "tables" / "efficiency.md").read_text()
    assert r"pdm\_balanced $\dagger$" in (tmp_path / "tables" / "main.tex").read_text()
    assert np.isclose(main.loc[main["method"] == "pdm_balanced", "nearest prototypes used"].iloc[0], 3)
