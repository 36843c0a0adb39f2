"""The Vision Transformer, numerically the model of ``vit_jax/models_vit.py``.

Parameter layout follows timm (fused ``qkv``) because one (3D x D) matmul is faster than three
(D x D) ones; the checkpoint readers split and join q/k/v as each format needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..kernels import Linear
from ..kernels.attention import attention
from ..kernels.gelu import gelu
from .config import ViTConfig
from .convstem import ConvStem
from .init import lecun_normal_, xavier_uniform_, zero_head
from .model_api import ModelApi
from .posemb import resample_posemb
from .resnet import ResNetStem


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch per sample."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class Attention(nn.Module):
    """Multi-head self-attention with q/k/v/out biases (Flax ``MultiHeadDotProductAttention``)."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = Linear(dim, 3 * dim)
        self.proj = Linear(dim, dim)
        self.attn_drop = attn_drop
        with torch.no_grad():
            # Flax initialises q, k, v as three separate (D, D) xavier-uniform kernels.
            for i in range(3):
                xavier_uniform_(self.qkv.weight[i * dim : (i + 1) * dim])
            nn.init.zeros_(self.qkv.bias)
            xavier_uniform_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        # Views only: unbind (not qkv[0], qkv[1], qkv[2]) so that backward writes the three
        # gradients with one stack into the (b, t, 3, h, hd) layout the qkv linear wants, instead
        # of zero-filling and copying a full-size buffer per slice.
        q, k, v = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim).unbind(2)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def forward(self, x: torch.Tensor, need_weights: bool = False,
                class_token_only: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, T, D) -> (N, T, D) and the probabilities (N, heads, T, T) when ``need_weights``.

        ``class_token_only``: only row 0 of the output, (N, 1, D). Each query row of attention is
        computed independently of the others, so only the class token's row is evaluated (keys
        and values still come from every token).
        """
        b, t, d = x.shape
        q, k, v = self._split(x)
        if class_token_only:
            q, t = q[:, :, :1], 1
        out, weights = attention(q, k, v, self.attn_drop if self.training else 0.0, need_weights)
        return self.proj(out.transpose(1, 2).reshape(b, t, d)), weights


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0, gelu: str = "tanh"):
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.fc2 = Linear(hidden, dim)
        self.drop = drop
        self.approximate = "tanh" if gelu == "tanh" else "none"
        for fc in (self.fc1, self.fc2):
            xavier_uniform_(fc.weight)
            nn.init.normal_(fc.bias, std=1e-6)

    def act(self, x: torch.Tensor) -> torch.Tensor:
        return gelu(x, self.approximate, self.fc1.fast if isinstance(self.fc1, Linear) else False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fc1 applies GELU itself so that it can fuse it into its kernel; a replaced fc1 (a
        # plain nn.Linear, an adapter wrapping it) gets it applied after.
        x = self.fc1(x, activation=self.approximate) if isinstance(self.fc1, Linear) else self.act(self.fc1(x))
        x = F.dropout(x, self.drop, self.training)
        return F.dropout(self.fc2(x), self.drop, self.training)


class Block(nn.Module):
    """Pre-LayerNorm encoder block (``Encoder1DBlock``)."""

    def __init__(self, cfg: ViTConfig, drop_path_rate: float = 0.0):
        super().__init__()
        d = cfg.hidden_size
        self.norm1 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.attn = Attention(d, cfg.num_heads, cfg.attention_dropout_rate)
        self.norm2 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.mlp = Mlp(d, cfg.mlp_dim, cfg.dropout_rate, cfg.gelu)
        self.drop = cfg.dropout_rate
        self.drop_path = drop_path_rate

    def forward(self, x: torch.Tensor, need_weights: bool = False,
                class_token_only: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, T, D) -> (N, T, D), and the attention probabilities when ``need_weights``.

        ``class_token_only``: the output for the class token only, ``forward(x)[0][:, :1]``,
        (N, 1, D). Attention still reads every token's key and value, but its output projection,
        the MLP and the LayerNorm before it run on one token instead of T (~3/4 of a block's
        FLOPs). Dropout and stochastic depth act as in the full block (per element and per
        sample), so in training the class token's output has the same distribution; without them
        it is the same function, and so are the gradients.
        """
        y, weights = self.attn(self.norm1(x), need_weights, class_token_only)
        y = F.dropout(y, self.drop, self.training)
        x = (x[:, :1] if class_token_only else x) + drop_path(y, self.drop_path, self.training)
        x = x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)
        return x, weights


# No public torch API tells fully_shard's hooks from others: they are private functions under
# torch.distributed.fsdp., as from torch 2.6 to the newest tested (tests/models/test_vit_fast.py, test_fsdp_*). Outside
# that range no hook is trusted (the full last block: right for any hook, slower under FSDP). Raise after testing.
FSDP_HOOKS_KNOWN = ((2, 6), (2, 13))


def _torch_version() -> tuple[int, int]:
    major, minor = str(torch.__version__).split(".")[:2]
    return int(major), int(minor)


def _is_shape_agnostic_hook(hook: object) -> bool:
    """``fully_shard``'s hooks gather and free parameters around a block's forward, whatever its
    output; any other hook may expect the block's full output (all tokens)."""
    low, high = FSDP_HOOKS_KNOWN
    if not low <= _torch_version() <= high:
        return False
    fn = getattr(hook, "func", hook)  # functools.partial
    return str(getattr(fn, "__module__", "")).startswith("torch.distributed.fsdp.")


@dataclass
class Intermediates:
    """What :meth:`VisionTransformer.forward_intermediates` returns."""

    output: torch.Tensor
    features: torch.Tensor
    tokens: dict[int, torch.Tensor] = field(default_factory=dict)
    attentions: dict[int, torch.Tensor] = field(default_factory=dict)


def _check_indices(indices: Sequence[int] | None, n: int, what: str) -> list[int]:
    if indices is None:
        return []
    out = []
    for i in indices:
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"{what} index {i} is out of range for a model with {n} blocks")
        out.append(j)
    return out


class VisionTransformer(ModelApi, nn.Module):
    """ViT and hybrid ViT. Input: float NCHW, normalised as ``config.mean``/``config.std``.

    Speed is declared on the model and chosen inside its one ``forward``, per call:

    * ``fast_paths`` (default on; :meth:`set_fast_paths`): the last block evaluated for the class
      token only when the logits read nothing else (``classifier="token"``, final norm before
      pooling; the same function and gradients); on CPU, linear layers on packed oneDNN weights
      with GELU fused in inference (:class:`vitkit.kernels.Linear`), the compiled tanh-GELU in
      bf16 (:func:`vitkit.kernels.gelu`), and under bf16 autocast the residual stream carried in
      bf16. fp32 stays the exact path (fp32 kernels differ from the plain ones by summation
      order only); each fast path falls back to the plain op where it does not apply (GPUs,
      tracing for ``torch.compile``/export). ``set_fast_paths(False)`` is the plain model.
    * ``grad_checkpointing`` (default off; :meth:`set_grad_checkpointing`, as in timm): each block
      recomputes its activations in backward instead of storing them.

    These are run-time choices, not architecture, so they are not part of :class:`ViTConfig` and
    checkpoints do not record them.
    """

    fast_paths: bool = True
    grad_checkpointing: bool = False

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        if not cfg.transformer:
            raise ValueError("VisionTransformer needs transformer=True; use BiTResNet for a plain ResNet")
        self.config = cfg
        d = cfg.hidden_size
        self.resnet = ResNetStem(cfg.resnet, cfg.in_chans) if cfg.resnet is not None else None
        self.conv_stem = ConvStem(cfg.stem_channels, cfg.stem_strides, cfg.in_chans) if cfg.stem_channels else None
        embed_in = cfg.stem_out_channels
        self.embedding = nn.Conv2d(embed_in, d, cfg.patch_size, stride=cfg.patch_size)
        lecun_normal_(self.embedding.weight)
        nn.init.zeros_(self.embedding.bias)
        self.cls = nn.Parameter(torch.zeros(1, 1, d)) if cfg.has_class_token else None
        self.pos_embedding = nn.Parameter(torch.empty(1, cfg.num_tokens, d).normal_(std=0.02))
        dpr = [cfg.drop_path_rate * i / max(cfg.num_layers - 1, 1) for i in range(cfg.num_layers)]
        self.blocks = nn.ModuleList(Block(cfg, dpr[i]) for i in range(cfg.num_layers))
        self.norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.pre_logits: nn.Linear | None = None
        if cfg.representation_size:
            self.pre_logits = nn.Linear(d, cfg.representation_size)
            lecun_normal_(self.pre_logits.weight)
            nn.init.zeros_(self.pre_logits.bias)
        self.head = zero_head(cfg.feature_dim, cfg.num_classes, cfg.head_bias_init)
        self._grid = cfg.grid_size

    # -- speed options ----------------------------------------------------------
    def set_fast_paths(self, enable: bool = True) -> VisionTransformer:
        """Turn the fast paths (class docstring) on or off; ``False``: the plain PyTorch model,
        the reference they are tested against. Returns the model."""
        self.fast_paths = bool(enable)
        for m in self.modules():
            if isinstance(m, Linear):
                m.fast = self.fast_paths
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> VisionTransformer:
        """Recompute each block's activations in backward instead of storing them (training with
        autograd only): the activation memory of one block plus the blocks' inputs, for about one
        extra forward pass. Non-reentrant, with the RNG state replayed, so dropout masks and
        gradients are the same as without. Returns the model."""
        self.grad_checkpointing = bool(enable)
        return self

    # -- configuration changes ------------------------------------------------
    def reset_head(self, num_classes: int, representation_size: int | None = None, head_bias_init: float = 0.0) -> None:
        """A new task: zero-initialised head; the pre-logits layer is dropped unless sized."""
        cfg = self.config
        if representation_size is None:
            self.pre_logits = None
        elif self.pre_logits is None or self.pre_logits.out_features != representation_size:
            self.pre_logits = nn.Linear(cfg.hidden_size, representation_size)
            lecun_normal_(self.pre_logits.weight)
            nn.init.zeros_(self.pre_logits.bias)
        self.config = cfg.replace(
            num_classes=num_classes, representation_size=representation_size,
            head_bias_init=head_bias_init, class_names=None,
        )
        self.head = zero_head(self.config.feature_dim, num_classes, head_bias_init)
        self.head.to(self.embedding.weight.device)

    @torch.no_grad()
    def set_image_size(self, image_size: int | tuple[int, int], method: str | None = None) -> None:
        """Resample the position-embedding parameter for a new input resolution."""
        cfg = self.config.replace(image_size=image_size)
        new = resample_posemb(
            self.pos_embedding.data, self._grid, cfg.grid_size, cfg.num_prefix_tokens,
            method or cfg.posemb_resample,
        )
        self.pos_embedding = nn.Parameter(new)
        self.config, self._grid = cfg, cfg.grid_size

    # -- forward passes ---------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        cfg = self.config
        if x.dim() != 4 or x.shape[1] != cfg.in_chans:
            raise ValueError(
                f"input images must be float (N, {cfg.in_chans}, H, W); got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"input images must be a float tensor, got {x.dtype}")
        s = cfg.stride
        if x.shape[-2] % s[0] or x.shape[-1] % s[1]:
            raise ValueError(
                f"input size {tuple(x.shape[-2:])} is not divisible by the model's stride {s} "
                f"({cfg.name}: patch {cfg.patch_size})"
            )

    def _posemb(self, grid: tuple[int, int]) -> torch.Tensor:
        if grid == self._grid:
            return self.pos_embedding
        # Resampling on the fly keeps gradients flowing to the stored embedding.
        return resample_posemb(
            self.pos_embedding, self._grid, grid, self.config.num_prefix_tokens, self.config.posemb_resample
        )

    def embed(self, x: torch.Tensor, corrupt: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Patch embedding, class token and position embeddings; ``corrupt`` first (masked patch prediction)."""
        self._check_input(x)
        if self.resnet is not None:
            x = self.resnet(x)
        if self.conv_stem is not None:
            x = self.conv_stem(x)
        x = self.embedding(x)
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2) if corrupt is None else corrupt(x.flatten(2).transpose(1, 2))
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self._posemb(grid)
        return F.dropout(x, self.config.dropout_rate, self.training)

    def _final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.config.norm_after_pool else self.norm(x)

    def _stream(self, x: torch.Tensor) -> torch.Tensor:
        """The residual stream's dtype: under bf16 autocast, bf16 (fast paths) instead of fp32.

        Autocast returns bf16 from every linear layer, but the residual adds promote the stream
        back to fp32, so each sub-block pays a full-size fp32 -> bf16 conversion before its linear
        and an fp32 add/LayerNorm (and the same again in backward). Casting the encoder's input
        once keeps it in bf16 (LayerNorm takes bf16 input with fp32 affine parameters;
        parameters and their gradients stay fp32). Measured +7% images/s for a ViT-S/16 training
        step and +6-8% for ViT-B/16 inference on the 2-core EPYC; logits and gradients within
        bf16 tolerance of fp32 (tests/models/test_vit_fast.py).
        """
        dev = x.device.type
        if (self.fast_paths and x.dtype == torch.float32 and torch.amp.is_autocast_available(dev)
                and torch.is_autocast_enabled(dev) and torch.get_autocast_dtype(dev) == torch.bfloat16):
            return x.to(torch.bfloat16)
        return x

    def _logits_read_class_token_only(self) -> bool:
        """Whether ``forward`` may evaluate the last block for the class token only: fast paths on,
        the logits read token 0 alone, and nothing needs the last block's full output (a hook on
        it, other than ``fully_shard``'s parameter gathering, which works for any output)."""
        cfg = self.config
        if not self.fast_paths or cfg.classifier != "token" or cfg.norm_after_pool or len(self.blocks) == 0:
            return False
        last = self.blocks[-1]
        hooks = (*last._forward_pre_hooks.values(), *last._forward_hooks.values())
        return all(_is_shape_agnostic_hook(h) for h in hooks)

    def _encode(self, x: torch.Tensor, class_token_only: bool = False) -> torch.Tensor:
        """The blocks over embedded tokens (before the final norm); ``class_token_only``: the last
        block for the class token only, (N, 1, D)."""
        x = self._stream(x)
        last = len(self.blocks) - 1
        ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            cls = class_token_only and i == last
            if ckpt:
                # Non-reentrant: works with inputs that do not require grad; the RNG state is
                # replayed so dropout masks (and hence gradients) are identical.
                x = checkpoint(block, x, False, cls, use_reentrant=False)[0]
            else:
                x = block(x, False, cls)[0]
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Encoded tokens (N, T, D) after the final LayerNorm."""
        return self._final_norm(self._encode(self.embed(x)))

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """What each classifier mode feeds to the representation layer and head."""
        mode = self.config.classifier
        if mode == "token":
            x = x[:, 0]
        elif mode == "gap":
            x = x.mean(dim=1)
        if self.config.norm_after_pool:
            x = self.norm(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x)
        if self.pre_logits is not None:
            x = torch.tanh(self.pre_logits(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes); with ``num_classes=0``, the pre-logits features."""
        class_token_only = self._logits_read_class_token_only()
        return self.forward_head(self._final_norm(self._encode(self.embed(x), class_token_only)))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        blocks: Sequence[int] | None = None,
        attentions: Sequence[int] | None = None,
    ) -> Intermediates:
        """Logits plus the output tokens of chosen blocks and the attention probabilities
        (N, heads, T, T) of chosen blocks. Negative indices count from the end."""
        n = len(self.blocks)
        want_tokens = set(_check_indices(blocks, n, "block"))
        want_attn = set(_check_indices(attentions, n, "attention"))
        out = Intermediates(output=x, features=x)
        x = self._stream(self.embed(x))
        for i, block in enumerate(self.blocks):
            x, w = block(x, need_weights=i in want_attn)
            if i in want_tokens:
                out.tokens[i] = x
            if i in want_attn:
                assert w is not None
                out.attentions[i] = w
        out.features = self._final_norm(x)
        out.output = self.forward_head(out.features)
        return out

    def get_attention_maps(self, x: torch.Tensor, layers: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Attention probabilities of the chosen layers (all by default), in layer order."""
        idx = list(range(len(self.blocks))) if layers is None else _check_indices(layers, len(self.blocks), "attention")
        res = self.forward_intermediates(x, attentions=idx)
        return [res.attentions[i] for i in idx]
