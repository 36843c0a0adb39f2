"""Few-shot linear evaluation against independent formulations of big_vision's fewshot_lsr."""

import numpy as np
import pytest
import torch

import vitkit
from vitkit.evaluate import extract_features, fewshot_per_seed, fit_lsr

L2 = 1024.0


def _reference_weights(x, y, num_classes, l2=L2):
    """Ridge regression as an augmented ordinary least-squares problem, solved by numpy lstsq."""
    x = np.asarray(x, np.float64)
    mu = x.mean(0)
    sd = np.sqrt(((x - mu) ** 2).mean(0)) + 1e-5
    xa = np.hstack([(x - mu) / sd, np.full((len(x), 1), 100.0)])
    targets = -np.ones((len(y), num_classes))
    targets[np.arange(len(y)), y] = 1.0
    d = xa.shape[1]
    a = np.vstack([xa, np.sqrt(l2) * np.eye(d)])
    b = np.vstack([targets, np.zeros((d, num_classes))])
    w = np.linalg.lstsq(a, b, rcond=None)[0]
    return mu, sd, w


def _reference_accuracy(xtr, ytr, xte, yte, num_classes):
    mu, sd, w = _reference_weights(xtr, ytr, num_classes)
    xa = np.hstack([(xte - mu) / sd, np.full((len(xte), 1), 100.0)])
    return float(np.mean(np.argmax(xa @ w, 1) == yte))


def _data(n_per_class, num_classes, dim, seed=0):
    centres = np.random.default_rng(123).normal(size=(num_classes, dim)) * 1.5  # shared by train and test
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(num_classes), n_per_class)
    x = centres[y] + rng.normal(size=(len(y), dim)) * np.linspace(0.5, 3.0, dim)
    perm = rng.permutation(len(y))
    return x[perm].astype(np.float32), y[perm]


@pytest.mark.parametrize("n,dim", [(60, 8), (12, 40)])  # primal (N >= D+1) and dual (N < D+1) branches
def test_weights_match_lstsq(n, dim):
    x, y = _data(n // 4, 4, dim)
    _, _, w = fit_lsr(x, y, 4, L2)
    _, _, w_ref = _reference_weights(x, y, 4)
    np.testing.assert_allclose(w, w_ref, rtol=1e-6, atol=1e-9)


def test_fewshot_matches_independent_selection_and_solver():
    xtr, ytr = _data(30, 5, 16, seed=1)
    xte, yte = _data(20, 5, 16, seed=2)
    shots, seeds = (1, 5, 10, 25), (0, 1, 2)
    got = fewshot_per_seed(xtr, ytr, xte, yte, shots, seeds)
    for si, seed in enumerate(seeds):
        # big_vision: one default_rng(seed) permutation per class, in class order; k shots = first k.
        rng = np.random.default_rng(seed)
        perms = {}
        for c in range(5):
            members = [i for i in range(len(ytr)) if ytr[i] == c]
            perms[c] = rng.permutation(np.array(members))
        for k in shots:
            idx = np.concatenate([perms[c][:k] for c in range(5)])
            ref = _reference_accuracy(xtr[idx], ytr[idx], xte, yte, 5)
            assert got[k][si] == pytest.approx(ref, abs=1e-12)
    means = vitkit.fewshot(xtr, ytr, xte, yte, shots, seeds)
    assert means == {k: pytest.approx(float(np.mean(v))) for k, v in got.items()}
    # Sanity: on clustered data 25-shot is well above chance (0.2).
    assert means[25] > 0.6


def test_fewshot_accepts_tensors_and_checks_inputs():
    xtr, ytr = _data(6, 3, 4)
    res = vitkit.fewshot(torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xtr), torch.from_numpy(ytr),
                         shots=(2,), seeds=(0,))
    assert set(res) == {2}
    with pytest.raises(ValueError, match="train_labels has"):
        vitkit.fewshot(xtr, ytr[:-1], xtr, ytr)
    with pytest.raises(ValueError, match="dimensions"):
        vitkit.fewshot(xtr, ytr, xtr[:, :2], ytr)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        vitkit.fewshot(xtr, ytr, xtr, ytr, num_classes=2)


def test_extract_features_is_the_pre_logits_representation():
    model = vitkit.create_model("ViT-Ti_16", num_classes=3, image_size=16, patch_size=4, num_layers=1,
                                hidden_size=32, num_heads=2, mlp_dim=64, representation_size=24).eval()
    x = torch.randn(5, 3, 16, 16)
    loader = [(x[:3], torch.tensor([0, 1, 2])), (x[3:], torch.tensor([1, 1]))]
    feats, labels = extract_features(model, loader, precision="fp32", progress=False)
    with torch.no_grad():
        tokens = model.forward_features(x)
        ref = torch.tanh(model.pre_logits(tokens[:, 0]))  # forward_features already applied the final norm
    assert feats.shape == (5, 24)
    np.testing.assert_allclose(feats, ref.numpy(), atol=1e-5)
    assert labels.tolist() == [0, 1, 2, 1, 1]
