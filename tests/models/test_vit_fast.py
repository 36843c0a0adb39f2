"""The speed options declared on VisionTransformer against the plain model (set_fast_paths(False)):
the class-token-only last block, fast kernels, bf16 residual stream, activation checkpointing;
and that they hold under FSDP and torch.compile."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from vitkit.kernels import Linear, mkldnn_linear_available
from vitkit.models.config import ViTConfig
from vitkit.models.registry import build_model
from vitkit.perf import autocast

needs_bf16 = pytest.mark.skipif(not mkldnn_linear_available(torch.bfloat16), reason="no native bf16 on this CPU")


def _model(classifier: str = "token", dropout: float = 0.0, layers: int = 3, **kw) -> torch.nn.Module:
    cfg = ViTConfig(name="tiny", patch_size=8, hidden_size=32, mlp_dim=64, num_heads=2, num_layers=layers,
                    num_classes=5, image_size=16, classifier=classifier, dropout_rate=dropout,
                    attention_dropout_rate=dropout, drop_path_rate=dropout, **kw)
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        for p in model.parameters():  # the zero head would make every logit 0
            p.add_(torch.randn_like(p) * 0.05)
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


def test_options_are_model_state_not_classes() -> None:
    m = _model()
    assert m.fast_paths and not m.grad_checkpointing  # the plain create_model model is the fast one
    sd = m.state_dict()
    assert m.set_fast_paths(False) is m and m.set_grad_checkpointing(True) is m
    assert type(m).__name__ == "VisionTransformer" and type(m.blocks[0]).__name__ == "Block"
    assert all(not lin.fast for lin in m.modules() if isinstance(lin, Linear))
    assert m.state_dict().keys() == sd.keys()
    c = copy.deepcopy(m)
    assert not c.fast_paths and c.grad_checkpointing


def test_class_token_path_same_logits_and_gradients_in_fp32() -> None:
    ref = _model().set_fast_paths(False)
    fast = copy.deepcopy(ref).set_fast_paths(True)
    x, target = torch.randn(4, 3, 16, 16), torch.randint(0, 5, (4,))
    for m in (ref, fast):
        F.cross_entropy(m(x), target).backward()
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-5, atol=1e-5)
    g_ref, g_fast = _grads(ref), _grads(fast)
    for name in g_ref:  # every parameter of the last block still gets its gradient
        torch.testing.assert_close(g_fast[name], g_ref[name], rtol=1e-5, atol=1e-6, msg=name)
    assert _tokens_seen_by_last_mlp(ref, x) == 5 and _tokens_seen_by_last_mlp(fast, x) == 1
    # forward_features (all tokens) is never shortened.
    assert fast.forward_features(x).shape == (4, 5, 32)


def test_models_that_need_every_token_take_the_full_block() -> None:
    x = torch.randn(2, 3, 16, 16)
    assert _tokens_seen_by_last_mlp(_model("gap"), x) == 4  # 2x2 patches, no class token
    assert _tokens_seen_by_last_mlp(_model("token", norm_after_pool=True), x) == 5
    hooked = _model()
    outputs: list[torch.Size] = []
    hooked.blocks[-1].register_forward_hook(lambda m, a, o: outputs.append(o[0].shape))
    hooked(x)
    assert outputs == [torch.Size([2, 5, 32])]  # a hook on the last block sees its full output


def test_dropout_in_training_and_eval() -> None:
    ref = _model(dropout=0.2).set_fast_paths(False)
    fast = copy.deepcopy(ref).set_fast_paths(True)
    x = torch.randn(4, 3, 16, 16)
    torch.manual_seed(1)
    a = fast(x)
    torch.manual_seed(1)
    b = fast(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # deterministic under a seed (resumes stay exact)
    a.sum().backward()
    assert all(p.grad is not None for p in fast.blocks[-1].parameters())
    with torch.no_grad():
        torch.testing.assert_close(fast.eval()(x), ref.eval()(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gelu,classifier", [("tanh", "token"), ("exact", "gap")])
def test_fp32_inference_matches_the_plain_model(gelu: str, classifier: str) -> None:
    model = _model(classifier, gelu=gelu, representation_size=16 if classifier == "token" else None).eval()
    plain = copy.deepcopy(model).set_fast_paths(False)
    x = torch.randn(3, 3, 16, 16)
    with torch.inference_mode():
        for _ in range(2):  # the second call runs on the cached packed weights
            torch.testing.assert_close(model(x), plain(x), rtol=0, atol=1e-5)
            feats = model.forward_head(model.forward_features(x), pre_logits=True)
            torch.testing.assert_close(feats, plain.forward_head(plain.forward_features(x), pre_logits=True),
                                       rtol=0, atol=1e-5)


@needs_bf16
@pytest.mark.parametrize("classifier", ["token", "gap"])
def test_bf16_inference_close_to_fp32(classifier: str) -> None:
    model = _model(classifier).eval()
    plain = copy.deepcopy(model).set_fast_paths(False)
    x = torch.randn(8, 3, 16, 16)
    with torch.inference_mode():
        ref = plain(x)
        with autocast("bf16"):
            plain_bf16 = plain(x).float()  # autocast alone, fp32 residual stream
            out = model(x).float()
            stream = model.forward_features(x)
    assert stream.dtype == torch.bfloat16  # the residual stream really is held in bf16
    scale = ref.abs().max()
    err, plain_err = (out - ref).abs().max(), (plain_bf16 - ref).abs().max()
    assert 0 < err <= 0.03 * scale  # it really ran in bf16, within a few bf16 roundings
    assert err <= 4 * plain_err + 2e-3 * scale


def _loss_grads(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        loss = F.cross_entropy(model(x).float(), y)
    loss.backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def test_bf16_residual_stream_gradients_within_bf16_tolerance() -> None:
    """The bf16 stream against fp32 (the reference), measured against plain autocast's own error."""
    model = _model()
    plain = copy.deepcopy(model).set_fast_paths(False)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 5, (8,))
    ref = _loss_grads(plain, x, y, bf16=False)
    plain_err = (_loss_grads(plain, x, y, bf16=True) - ref).norm() / ref.norm()
    seen: list[torch.dtype] = []
    model.blocks[1].register_forward_pre_hook(lambda m, a: seen.append(a[0].dtype))
    stream = _loss_grads(model, x, y, bf16=True)
    assert seen == [torch.bfloat16]  # the stream really is bf16 between blocks
    seen.clear()
    _loss_grads(model, x, y, bf16=False)
    assert seen == [torch.float32]  # no effect outside bf16 autocast
    err = (stream - ref).norm() / ref.norm()
    assert 0 < err <= 0.05
    assert err <= 4 * plain_err + 1e-3


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_checkpointing_gives_identical_gradients(dropout: float) -> None:
    ref = _model(dropout=dropout)
    ck = copy.deepcopy(ref).set_grad_checkpointing(True)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    grads = []
    for m in (ref, ck):
        torch.manual_seed(123)  # same dropout masks; checkpointing must replay them in the recompute
        F.cross_entropy(m(x), y).backward()
        grads.append(_grads(m))
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=0, atol=0, msg=k)
    saved: list[int] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        ck(x)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(-t.numel()) or t, lambda t: t):
        ref(x)
    assert sum(n for n in saved if n > 0) < -sum(n for n in saved if n < 0)  # it really stores less
    with torch.no_grad():  # evaluation: no checkpointing, the same function
        torch.testing.assert_close(ck.eval()(x), ref.eval()(x), rtol=0, atol=0)


def test_compiles_as_one_graph() -> None:
    # aot_eager traces forward and backward as inductor would (no C++ compile: fast); fullgraph
    # fails on any graph break the per-call kernel choices might cause.
    model = _model()
    ref = copy.deepcopy(model)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 5, (4,))
    for m in (compiled, ref):
        F.cross_entropy(m(x), y).backward()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), ref(x), rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_fsdp_sharded_last_block_keeps_the_class_token_path(tmp_path) -> None:
    # fully_shard gathers a block's parameters in hooks around forward(); the class-token path
    # runs through the block's forward, so its hooks (and only such hooks) leave the path on.
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = _model().set_grad_checkpointing(True)
        reference = copy.deepcopy(model).set_fast_paths(False)
        mesh = init_device_mesh("cpu", (1,))
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        x, y = torch.randn(2, 3, 16, 16), torch.tensor([1, 2])
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)
        assert _tokens_seen_by_last_mlp(model, x) == 1
        F.cross_entropy(model(x), y).backward()
        F.cross_entropy(reference(x), y).backward()
        for (name, p), q in zip(model.named_parameters(), reference.parameters()):
            torch.testing.assert_close(p.grad.full_tensor(), q.grad, rtol=1e-4, atol=1e-6, msg=name)
    finally:
        dist.destroy_process_group()


def test_fsdp_hooks_are_trusted_only_on_a_tested_torch(monkeypatch) -> None:
    # fully_shard's hooks are told by the (private) module defining them; on a torch outside the tested range the
    # version guard trusts no hook, and the last block runs in full.
    from vitkit.models import vit

    def hook(module, args):
        return None

    hook.__module__ = "torch.distributed.fsdp._fully_shard._fsdp_state"
    model = _model()
    model.blocks[-1].register_forward_pre_hook(hook)
    x = torch.randn(2, 3, 16, 16)
    low, high = vit.FSDP_HOOKS_KNOWN
    assert low <= vit._torch_version() <= high  # the installed torch is a tested one: raise the bound after testing
    assert _tokens_seen_by_last_mlp(model, x) == 1
    monkeypatch.setattr(vit, "_torch_version", lambda: (high[0], high[1] + 1))
    assert _tokens_seen_by_last_mlp(model, x) == 5
    hook.__module__ = __name__  # any other hook may read every token: always the full block
    monkeypatch.undo()
    assert _tokens_seen_by_last_mlp(model, x) == 5
