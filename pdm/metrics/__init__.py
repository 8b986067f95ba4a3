"""Image-quality metrics (FID, KID, clean-FID, IS) on one offline FID Inception-v3 network.

See `inception` for where the weights come from and how the extractor is identified (`extractor_identity`: a pinned
hash of its tensors), and `scores` for how each number is computed.
"""

from pdm.metrics.inception import (
    EXTRACTOR_NAME,
    EXTRACTOR_TENSORS_SHA256,
    build_feature_extractor,
    converted_weights_path,
    extractor_identity,
    find_fid_helper_torchscript,
    logits_weights_path,
    logits_weights_status,
    tensors_sha256,
    weights_sha256,
)
from pdm.metrics.scores import (
    compute_reference_stats,
    extract_features,
    load_reference_stats,
    remove_feature_chunks,
    score_samples,
)

__all__ = [
    "EXTRACTOR_NAME",
    "EXTRACTOR_TENSORS_SHA256",
    "build_feature_extractor",
    "compute_reference_stats",
    "converted_weights_path",
    "extract_features",
    "extractor_identity",
    "find_fid_helper_torchscript",
    "load_reference_stats",
    "logits_weights_path",
    "logits_weights_status",
    "remove_feature_chunks",
    "score_samples",
    "tensors_sha256",
    "weights_sha256",
]
