"""Image-quality metrics (FID, KID, clean-FID, IS) on one offline FID Inception-v3 network.

See `inception` for where the weights come from and `scores` for how each number is computed.
"""

from pdm.metrics.inception import (
    EXTRACTOR_NAME,
    build_feature_extractor,
    converted_weights_path,
    find_fid_helper_torchscript,
    logits_weights_path,
    logits_weights_status,
    weights_sha256,
)
from pdm.metrics.scores import compute_reference_stats, extract_features, load_reference_stats, score_samples

__all__ = [
    "EXTRACTOR_NAME",
    "build_feature_extractor",
    "compute_reference_stats",
    "converted_weights_path",
    "extract_features",
    "find_fid_helper_torchscript",
    "load_reference_stats",
    "logits_weights_path",
    "logits_weights_status",
    "score_samples",
    "weights_sha256",
]
