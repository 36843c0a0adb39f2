"""The loss and top-k definitions shared by the training step and the evaluator, and the evaluator's sums."""

import pytest
import torch

from vitkit.evaluate import compute_loss, score, topk_correct


def test_losses_and_topk_against_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 3.0]])
    labels = torch.tensor([0, 1])
    # softmax CE by hand
    lse = torch.log(torch.exp(logits).sum(-1))
    ce = (lse - logits[torch.arange(2), labels]).mean()
    torch.testing.assert_close(compute_loss(logits, labels, "softmax", 0.0), ce)
    # soft targets (mixup) give the same as hard ones when one-hot
    onehot = torch.nn.functional.one_hot(labels, 3).float()
    torch.testing.assert_close(compute_loss(logits, onehot, "softmax", 0.0), ce)
    # sigmoid: per-class binary cross-entropy summed over classes, averaged over examples
    p = torch.sigmoid(logits)
    bce = -(onehot * torch.log(p) + (1 - onehot) * torch.log(1 - p)).sum(-1).mean()
    torch.testing.assert_close(compute_loss(logits, labels, "sigmoid", 0.0), bce)
    # top-k: example 0 correct at top-1; example 1 (label 1) is second -> top-2 hit only
    assert topk_correct(logits, labels, (1, 2, 5)) == [1, 2, 2]


def test_multi_hot_topk_counts_any_positive_label():
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    labels = torch.tensor([[0, 1, 0], [1, 0, 0]])  # row 0: class 1 is 2nd; row 1: class 0 is 3rd
    assert topk_correct(logits, labels, (1, 2, 3)) == [0, 1, 2]


def test_score_reduces_sums_before_dividing():
    """The trainer's sharded evaluation: ``reduce`` sees the raw sums (here doubled as by a 2-process all-reduce)."""
    model = torch.nn.Linear(2, 3)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3, 2))
        model.bias.zero_()
    x, y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1, 2])
    seen = []
    res = score(model, [(x, y)], topk=(1,), precision="fp32", reduce=lambda s: seen.append(s.clone()) or s.mul_(2))
    assert seen[0][0] == 3  # examples, before the division
    assert res["examples"] == 6 and res["top1"] == pytest.approx(2 / 3)
    assert res["loss"] == pytest.approx(float(compute_loss(model(x).detach(), y, "softmax", 0.0)), rel=1e-6)
    assert model.training  # the model's mode is restored
