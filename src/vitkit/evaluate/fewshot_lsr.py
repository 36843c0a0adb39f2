"""Few-shot linear evaluation of a frozen representation, as big_vision's ``fewshot_lsr``.

The paper (Section 4, "few-shot accuracy") fits a regularised least-squares regression from the
frozen representation of a few images per class to ``{-1, 1}`` targets and reports the accuracy
of its argmax. The definition followed here is that of
``big_vision/evaluators/fewshot_lsr.py``:

* whitening per feature with the mean and the (population) standard deviation of the few-shot
  *training* features, ``std + 1e-5``; the same transform is applied to the test features;
* a constant feature 100 appended as the last column (a bias that the L2 penalty barely
  touches, because a weight on a large constant needs to be small);
* targets ``2 * onehot(label, num_classes) - 1``;
* closed-form ridge regression with L2 strength 1024: ``(X^T X + l2 I)^-1 X^T Y`` when there are
  at least as many points as features, otherwise the dual form ``X^T (X X^T + l2 I)^-1 Y``
  (mathematically identical; only the size of the system differs);
* prediction: the argmax over classes of ``X_test W``;
* for each seed ``s``, ``numpy.random.default_rng(s)`` draws one permutation of each class's
  training indices (class 0 first); ``k`` shots take the first ``k`` of each, so the 5-shot set
  contains the 1-shot set. A class with fewer than ``k`` images contributes all it has.

big_vision solves through an eigendecomposition in float32 on the JAX CPU backend; this
implementation solves the same linear system with a float64 Cholesky-type solve, so results can
differ only where float32 rounding flips an argmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UserError

BIAS_CONSTANT = 100.0
L2_REG = 2.0**10
DEFAULT_SHOTS = (1, 5, 10, 25)
DEFAULT_SEEDS = (0, 1, 2)


def _as_numpy(a: Any, name: str, ndim: int) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor, without importing torch here
        a = a.detach().float().cpu().numpy()
    arr = np.asarray(a)
    if arr.ndim != ndim:
        raise UserError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    return arr


def _check_labels(labels: np.ndarray, name: str, num_classes: int) -> np.ndarray:
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise UserError(f"{name} must be integer class indices, got dtype {labels.dtype}")
        labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(
            f"{name} must lie in [0, {num_classes}); found values in [{labels.min()}, {labels.max()}]"
        )
    return labels.astype(np.int64)


def _whiten_and_augment(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    x = (np.asarray(x, dtype=np.float64) - mean) / std
    return np.pad(x, ((0, 0), (0, 1)), constant_values=BIAS_CONSTANT)


def fit_lsr(
    x_train: np.ndarray, y_train: np.ndarray, num_classes: int, l2_reg: float = L2_REG,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, std, W): the whitening statistics and the (D + 1, classes) ridge solution, bias row last."""
    x = np.asarray(x_train, dtype=np.float64)
    mean = x.mean(axis=0, keepdims=True)
    std = x.std(axis=0, keepdims=True) + 1e-5
    x = _whiten_and_augment(x, mean, std)
    y = 2.0 * np.eye(num_classes, dtype=np.float64)[np.asarray(y_train)] - 1.0
    n, d = x.shape
    # Solve whichever of the two equivalent systems is smaller (as big_vision picks its eigh).
    if n >= d:
        w = np.linalg.solve(x.T @ x + l2_reg * np.eye(d), x.T @ y)
    else:
        w = x.T @ np.linalg.solve(x @ x.T + l2_reg * np.eye(n), y)
    return mean, std, w


def lsr_predict(x_test: np.ndarray, mean: np.ndarray, std: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Predicted classes (argmax of the regression outputs)."""
    return np.argmax(_whiten_and_augment(x_test, mean, std) @ w, axis=1)


def lsr_accuracy(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    l2_reg: float = L2_REG,
) -> float:
    """Accuracy on ``(x_test, y_test)`` of the ridge regression fitted on ``(x_train, y_train)``."""
    mean, std, w = fit_lsr(x_train, y_train, num_classes, l2_reg)
    return float(np.mean(lsr_predict(x_test, mean, std, w) == np.asarray(y_test)))


def fewshot_indices(train_labels: np.ndarray, num_classes: int, shots: int, seed: int) -> np.ndarray:
    """The training indices a seed picks for ``shots`` images per class (big_vision's order)."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(train_labels == c)) for c in range(num_classes)]
    return np.concatenate([idx[:shots] for idx in per_class])


def fewshot_per_seed(
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    test_labels: Any,
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    *,
    num_classes: int | None = None,
    l2_reg: float = L2_REG,
) -> dict[int, list[float]]:
    """Few-shot accuracy for each shot count and each seed (in the order of ``seeds``)."""
    xtr = _as_numpy(train_features, "train_features", 2)
    xte = _as_numpy(test_features, "test_features", 2)
    ytr = _as_numpy(train_labels, "train_labels", 1)
    yte = _as_numpy(test_labels, "test_labels", 1)
    if len(xtr) != len(ytr):
        raise UserError(f"train_features has {len(xtr)} rows but train_labels has {len(ytr)}")
    if len(xte) != len(yte):
        raise UserError(f"test_features has {len(xte)} rows but test_labels has {len(yte)}")
    if xtr.shape[1] != xte.shape[1]:
        raise UserError(f"train features have {xtr.shape[1]} dimensions but test features {xte.shape[1]}")
    if len(xtr) == 0 or len(xte) == 0:
        raise UserError("few-shot evaluation needs at least one training and one test example")
    if not np.all(np.isfinite(xtr)) or not np.all(np.isfinite(xte)):
        raise UserError("features contain NaN or infinity")
    if num_classes is None:
        num_classes = int(max(ytr.max(initial=0), yte.max(initial=0))) + 1
    ytr = _check_labels(ytr, "train_labels", num_classes)
    yte = _check_labels(yte, "test_labels", num_classes)
    shots = [int(k) for k in shots]
    if any(k < 1 for k in shots):
        raise UserError(f"shots must be positive, got {shots}")
    out: dict[int, list[float]] = {k: [] for k in shots}
    for seed in seeds:
        for k in shots:
            idx = fewshot_indices(ytr, num_classes, k, int(seed))
            out[k].append(lsr_accuracy(xtr[idx], ytr[idx], xte, yte, num_classes, l2_reg))
    return out


def fewshot(
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    test_labels: Any,
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    *,
    num_classes: int | None = None,
    l2_reg: float = L2_REG,
) -> dict[int, float]:
    """Mean few-shot linear accuracy over ``seeds`` for each number of ``shots`` per class.

    Features are (N, D) arrays or tensors (the frozen pre-logits representation), labels (N,)
    integer class indices. ``num_classes`` defaults to one more than the largest label seen.
    See the module docstring for the exact definition (big_vision's ``fewshot_lsr``).
    """
    per_seed = fewshot_per_seed(
        train_features, train_labels, test_features, test_labels, shots, seeds,
        num_classes=num_classes, l2_reg=l2_reg,
    )
    return {k: float(np.mean(v)) for k, v in per_seed.items()}
