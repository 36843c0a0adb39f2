"""Evaluation: top-k accuracy, the paper's few-shot linear evaluation, image loading for predict."""

from .core import evaluate_accuracy, extract_features, predict_probabilities, score
from .fewshot_lsr import fewshot, fewshot_indices, fewshot_per_seed, fit_lsr, lsr_accuracy, lsr_predict
from .images import find_images, load_image, load_images
from .metrics import compute_loss, topk_correct, topk_hits

__all__ = [
    "compute_loss", "evaluate_accuracy", "extract_features", "fewshot", "fewshot_indices", "fewshot_per_seed",
    "find_images", "fit_lsr", "load_image", "load_images", "lsr_accuracy", "lsr_predict", "predict_probabilities",
    "score", "topk_correct", "topk_hits",
]
