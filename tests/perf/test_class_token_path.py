"""The last block evaluated for the class token only (vitkit.perf.fast.skip_unused_last_block)."""

from __future__ import annotations

import copy

import pytest
import torch

from vitkit.models.config import ViTConfig
from vitkit.models.registry import build_model
from vitkit.perf import autocast, fast_bf16_training, fast_training, inference_model
from vitkit.perf.fast import skip_unused_last_block


def _model(classifier: str = "token", dropout: float = 0.0, layers: int = 3) -> torch.nn.Module:
    cfg = ViTConfig(name="tiny", patch_size=8, hidden_size=32, mlp_dim=64, num_heads=2, num_layers=layers,
                    num_classes=5, image_size=16, classifier=classifier, dropout_rate=dropout,
                    attention_dropout_rate=dropout, drop_path_rate=dropout)
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        model.head.weight.normal_(std=0.1)
    return model.train()


def _tokens_seen_by_last_mlp(model: torch.nn.Module, x: torch.Tensor) -> int:
    seen: list[int] = []
    handle = model.blocks[-1].mlp.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    try:
        model(x)
    finally:
        handle.remove()
    return seen[0]


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_same_logits_and_gradients_in_fp32() -> None:
    ref = _model()
    fast = skip_unused_last_block(copy.deepcopy(ref))
    assert fast.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(4, 3, 16, 16)
    target = torch.randint(0, 5, (4,))
    for m in (ref, fast):
        torch.nn.functional.cross_entropy(m(x), target).backward()
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-6, atol=1e-6)
    g_ref, g_fast = _grads(ref), _grads(fast)
    assert g_ref.keys() == g_fast.keys()
    for name in g_ref:  # every parameter of the last block still gets its gradient
        torch.testing.assert_close(g_fast[name], g_ref[name], rtol=1e-5, atol=1e-7, msg=name)
    assert _tokens_seen_by_last_mlp(ref, x) == 5 and _tokens_seen_by_last_mlp(fast, x) == 1


def test_bf16_training_path_matches_the_full_block() -> None:
    full = fast_bf16_training(_model())
    fast = fast_training(copy.deepcopy(full), "bf16")
    x = torch.randn(4, 3, 16, 16)
    with autocast("bf16", "cpu"):
        out_full, out_fast = full(x), fast(x)
    assert _tokens_seen_by_last_mlp(fast, x) == 1
    # The same kernels row by row (the explicit bf16 attention is chosen on the keys' shape).
    torch.testing.assert_close(out_fast.float(), out_full.float(), rtol=0, atol=1e-2)


def test_models_that_need_every_token_are_left_alone() -> None:
    x = torch.randn(2, 3, 16, 16)
    gap = skip_unused_last_block(_model("gap"))
    assert _tokens_seen_by_last_mlp(gap, x) == 4  # 2x2 patches, no class token
    hooked = skip_unused_last_block(_model())
    calls: list[int] = []
    hooked.blocks[-1].register_forward_hook(lambda m, a, o: calls.append(1))
    hooked(x)
    assert calls == [1]  # a hook on the last block: forward() runs as written


def test_dropout_in_training_and_eval() -> None:
    ref = _model(dropout=0.2)
    fast = skip_unused_last_block(copy.deepcopy(ref))
    x = torch.randn(4, 3, 16, 16)
    torch.manual_seed(1)
    a = fast(x)
    torch.manual_seed(1)
    b = fast(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # deterministic under a seed (resumes stay exact)
    a.sum().backward()
    assert all(p.grad is not None for p in fast.blocks[-1].parameters())
    with torch.no_grad():
        torch.testing.assert_close(fast.eval()(x), ref.eval()(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_inference_copy_of_a_model_trained_fast(precision: str) -> None:
    ref = _model()
    trained = fast_training(copy.deepcopy(ref), precision)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad(), autocast(precision, "cpu"):
        got = inference_model(trained, precision)(x).float()
        want = inference_model(ref, precision)(x).float()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5 if precision == "fp32" else 2e-2)


def test_fsdp_sharded_last_block_takes_the_full_forward(tmp_path):
    # fully_shard gathers a block's parameters in hooks around forward(); the one-row path would
    # skip them, so a sharded last block must run its plain forward (one process, gloo on CPU).
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from vitkit.perf.fast import _last_block_for_class_token

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = skip_unused_last_block(_model())
        assert _last_block_for_class_token(model) is model.blocks[-1]
        reference = copy.deepcopy(model)
        mesh = init_device_mesh("cpu", (1,))
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        assert _last_block_for_class_token(model) is None
        sharded_class = type(model)
        skip_unused_last_block(model)  # a second swap (e.g. fast_training called again) is a no-op
        assert type(model) is sharded_class
        x = torch.randn(2, 3, 16, 16)
        torch.testing.assert_close(model(x), reference(x))
        assert _tokens_seen_by_last_mlp(model, x) == 5  # all 4 patches + the class token
    finally:
        dist.destroy_process_group()
