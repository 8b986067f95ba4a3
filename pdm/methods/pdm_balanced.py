"""pdm_balanced: PDM trained on an equal-partition prototype assignment. Extension beyond the paper (not in arXiv
2508.09922): an ablation of ours, kept apart from the faithful `pdm`, to test whether prototype diversity changes FID.

At the default budget PDM's unsupervised nearest-prototype assignment collapses onto one prototype of ten: the U-Net
then sees one conditioning token and PDM is a DDPM with a learned bias. Here the training batch's assignment is the
Sinkhorn-Knopp equal partition (SwAV, Caron et al. 2020, Alg. 1; pdm.prototypes.sinkhorn_assignment), used for both
the token and the L_con / L_align targets:

    c = ||z - p_k|| / mean_bk ||z - p_k||        (B, K) Euclidean, as PDM's own rule, made scale-free
    Q = exp(-c / epsilon), rows -> 1/B, columns -> 1/K, `sinkhorn_iterations` rounds;  k*_b = argmax_k Q_bk

Everything else is PDM's (f_phi, bank, losses, token, sampler). Two choices, with their reasons:

* epsilon acts on distances divided by their batch mean, not on raw distances nor on cosine similarities. Raw
  distances make epsilon's meaning drift with the feature norm (which L_align changes during training); cosine
  similarities (SwAV's scores) would ignore the norms that PDM's Euclidean nearest-prototype rule uses. With the
  mean-normalised Euclidean cost the balanced assignment is a perturbation of PDM's own rule, and epsilon = 0.05 says
  "a gap of 5% of the typical distance is a factor e", close to SwAV's sharpness on [-1, 1] scores.
* finalize (the generation prior, `usage_counts`) counts the same equal-partition assignment over the training set
  (eval mode, batches of the training batch size), not the nearest prototype. Generation never assigns anything:
  it draws a token from usage_counts, and the U-Net learned token k on the images that carried token k in
  training, so the prior must be how often each token was used in training (about uniform, by construction).
  Counting the nearest prototype there could hand a model trained on ten tokens a one-token prior. Where the
  nearest prototype itself lands is reported by the diagnostics (`pdm-bench diagnose`) and by the record's
  `prototypes_used_nearest`.
"""

from __future__ import annotations

from typing import Any

import torch

from pdm.methods.base import options_from_yaml
from pdm.methods.pdm import PDM
from pdm.prototypes import assignment_entropy, sinkhorn_assignment

EXTENSION = "extension beyond the paper (not in arXiv 2508.09922): Sinkhorn-Knopp equal-partition assignment (SwAV)"


class BalancedPDM(PDM):
    """PDM with the SwAV equal-partition (Sinkhorn-Knopp) training assignment: an extension beyond the paper (not in
    arXiv 2508.09922), see the module docstring."""

    name = "pdm_balanced"
    description = f"PDM with balanced prototype assignment; {EXTENSION}"
    extension = EXTENSION
    options_schema = {
        **PDM.options_schema,
        **options_from_yaml("""
        sinkhorn_epsilon: {type: number, exclusiveMinimum: 0, default: 0.05, description: "entropic regularisation on distances divided by their batch mean (SwAV: 0.05)"}
        sinkhorn_iterations: {type: integer, minimum: 1, default: 3, description: "Sinkhorn-Knopp rounds (SwAV: 3)"}
        """),
    }

    def train_assign(self, z: torch.Tensor, labels) -> torch.Tensor:
        distances = torch.cdist(z, self.bank.prototypes.detach())  # (B, K)
        self._batch_nearest = distances.argmin(dim=1)  # (B,) PDM's own rule on the same batch, for the logs
        return sinkhorn_assignment(distances, self.options["sinkhorn_epsilon"], self.options["sinkhorn_iterations"])

    def context(self, x0, labels, t, generator, index=None):
        tokens, aux, logs = super().context(x0, labels, t, generator, index)
        # where the nearest prototype (PDM's rule) would have put this batch: does the geometry itself diversify?
        entropy, distinct = assignment_entropy(self._batch_nearest, self.bank.prototypes.shape[0])
        return tokens, aux, {**logs, "nearest_entropy": entropy, "nearest_in_batch": distinct}

    @torch.no_grad()
    def finalize(self, dataset) -> None:
        """usage_counts = the equal-partition assignment of the training set (the tokens' training frequencies)."""
        was_training = self.training
        self.eval()
        counts = torch.zeros_like(self.bank.usage_counts)
        nearest_counts = torch.zeros_like(counts)
        # training batches' size: the equal partition is over a batch, as in training
        for z, _ in self.training_set_features(dataset, self.cfg.train.batch_size):
            counts += torch.bincount(self.train_assign(z, None), minlength=len(counts)).to(counts.dtype)
            nearest_counts += torch.bincount(self.assign(z, None), minlength=len(counts)).to(counts.dtype)
        self.bank.usage_counts.copy_(counts)
        self._nearest_used = int((nearest_counts > 0).sum())
        self.train(was_training)

    def record(self) -> dict[str, Any]:
        return {**super().record(), "assignment": "sinkhorn-equal-partition",
                "sinkhorn_epsilon": self.options["sinkhorn_epsilon"],
                "sinkhorn_iterations": self.options["sinkhorn_iterations"],
                "prototypes_used_nearest": getattr(self, "_nearest_used", None)}
