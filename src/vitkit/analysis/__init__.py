"""The paper's analyses: attention rollout, mean attention distance, position-embedding
similarity and patch-embedding filters (Section 4.5, Figures 6 and 7)."""

from .attention import attention_rollout, mean_attention_distance, patch_distances
from .figures import check_analyzable, collect_attention_stats, embedding_pca, posemb_similarity, write_figures

__all__ = [
    "attention_rollout", "check_analyzable", "collect_attention_stats", "embedding_pca", "mean_attention_distance",
    "patch_distances", "posemb_similarity", "write_figures",
]
