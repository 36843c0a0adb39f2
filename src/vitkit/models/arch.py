"""What an architecture is: the :class:`~vitkit.models.config.ViTConfig` fields that decide a model's weights, their
flat ``model.*`` form, the comparison of two architectures (:func:`arch_diff`), the hybrid's ResNet stem
(:class:`ResNetConfig` and its one conversion from a mapping), and what a checkpoint reader asks about a file's
position grid and class token.

The one owner of these: nothing outside ``vitkit.models`` lists architecture fields, converts a ResNet mapping or
recomputes a grid (``tests/test_architecture.py`` pins it), so a new architecture field is added here and in
:class:`ViTConfig` only.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..image_size import as_hw

# The fields that decide which weights a model has, in the order messages name them.
ARCH_FIELDS = ("patch_size", "hidden_size", "mlp_dim", "num_heads", "num_layers", "classifier", "in_chans",
               "transformer", "resnet", "stem_channels", "stem_strides")
# The backbone's shape: what a model's name fixes (pooling and input channels are a fine-tune's to choose).
SHAPE_FIELDS = tuple(f for f in ARCH_FIELDS if f not in ("classifier", "in_chans"))
# Everything a checkpoint's tensor shapes decide: the architecture, the head and the position grid.
WEIGHT_FIELDS = (*ARCH_FIELDS, "representation_size", "num_classes", "image_size")
# The ResNet stem in flat form, as key=value options give it (model.resnet_layers=3,4,9 model.resnet_width=1).
FLAT_RESNET = ("resnet_layers", "resnet_width")
# The transformer fields of a plain BiT ResNet (transformer=False): unused, fixed so that two such configs
# compare equal whoever wrote them (the registry, a .npz reader).
PLAIN_RESNET: dict[str, Any] = dict(transformer=False, classifier="gap", patch_size=(1, 1), hidden_size=64,
                                    num_heads=1, mlp_dim=0, num_layers=0)
# Classifiers that read a class token.
TOKEN_CLASSIFIERS = ("token", "token_unpooled")


class ConfigFieldError(ValueError):
    """A config value of the wrong type or out of range; ``field`` names it (for file-level messages)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ResNetConfig:
    """The BiT ResNet used as a hybrid stem (``config.resnet`` in the official code).

    ``num_layers`` is the number of bottleneck units per stage; ``()`` means only the root
    block (7x7/2 StdConv, GroupNorm, ReLU, 3x3/2 max-pool).
    """

    num_layers: tuple[int, ...] = (3, 4, 9)
    # Any positive float, as the official ``int(64 * width_factor)`` (0.5 -> 32 channels); integral values are
    # kept as int so configs written before read back equal.
    width_factor: int | float = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_layers", tuple(int(n) for n in self.num_layers))
        wf = self.width_factor
        if isinstance(wf, bool) or not isinstance(wf, (int, float)) or not math.isfinite(wf) or wf <= 0:
            raise UserError(f"resnet.width_factor must be a positive number, got {wf!r}")
        object.__setattr__(self, "width_factor", int(wf) if float(wf).is_integer() else float(wf))
        if self.width < 32 or self.width % 32:
            # every ResNet GroupNorm has 32 groups (Flax's default), which must divide the channels
            raise UserError(f"resnet.width_factor {wf} gives int(64 * {wf}) = {self.width} root channels; the "
                             "32-group GroupNorms need a positive multiple of 32 (width_factor 0.5, 1, 1.5, ...)")
        if any(n < 1 for n in self.num_layers):
            raise UserError(f"resnet.num_layers must be positive, got {self.num_layers}")

    @property
    def width(self) -> int:
        return int(64 * self.width_factor)

    @property
    def reduction(self) -> int:
        """Total spatial down-sampling of the stem (root /4, each stage after the first /2)."""
        return 4 * 2 ** max(len(self.num_layers) - 1, 0)

    @property
    def out_channels(self) -> int:
        if not self.num_layers:
            return self.width
        return self.width * 2 ** (len(self.num_layers) - 1) * 4


# Stages and units per stage of a hybrid stem read from a file (BiT-R152: 4 stages, at most 36 units).
MAX_RESNET_STAGES, MAX_RESNET_UNITS, MAX_WIDTH_FACTOR = 8, 1024, 256


def resnet_config(r: Any, complete: bool = True) -> ResNetConfig | None:
    """The ResNet stem from its mapping form (JSON, a Python dict ``{"num_layers": [...], "width_factor": w}``), with
    types and ranges checked first (the mapping may come from an untrusted file); a :class:`ResNetConfig` or None
    is returned as it is. ``complete=False`` (a Python caller's ``resnet={"num_layers": (1,)}``): a missing key
    keeps :class:`ResNetConfig`'s default; a file must name both. The one conversion: ViTConfig, its readers and
    the registry all come here."""
    if r is None or isinstance(r, ResNetConfig):
        return r
    keys = {"num_layers", "width_factor"}
    if not isinstance(r, Mapping) or not (set(r) == keys if complete else set(r) <= keys):
        raise ConfigFieldError("resnet", f"resnet={r!r}: expected {{'num_layers': [...], 'width_factor': int}} or null")
    layers, wf = r.get("num_layers", ResNetConfig.num_layers), r.get("width_factor", ResNetConfig.width_factor)
    what = "resnet.num_layers"
    if not isinstance(layers, (list, tuple)) or len(layers) > MAX_RESNET_STAGES:
        raise ConfigFieldError(what, f"{what}={layers!r}: expected a list of at most {MAX_RESNET_STAGES} unit counts")
    for n in layers:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= MAX_RESNET_UNITS:
            raise ConfigFieldError(what, f"{what}={layers!r}: expected integers in [1, {MAX_RESNET_UNITS}]")
    if isinstance(wf, bool) or not isinstance(wf, numbers.Real) or not 0 < wf <= MAX_WIDTH_FACTOR:
        what = "resnet.width_factor"  # NaN fails the range test too
        raise ConfigFieldError(what, f"{what}={wf!r}: expected a number in (0, {MAX_WIDTH_FACTOR}]")
    try:
        return ResNetConfig(num_layers=tuple(int(n) for n in layers), width_factor=wf)
    except ValueError as e:  # ResNetConfig's own rules (its owner decides which widths exist)
        raise ConfigFieldError("resnet", str(e)) from e


def resnet_from_flat(layers: Sequence[int] | None, width: float | None, base: ResNetConfig | None) -> ResNetConfig:
    """The ResNet stem that flat ``resnet_layers`` / ``resnet_width`` describe; an unset one keeps ``base``'s (the
    named model's stem; none: the root block only, width 1)."""
    base = base or ResNetConfig(num_layers=())
    return ResNetConfig(num_layers=base.num_layers if layers is None else tuple(layers),
                        width_factor=base.width_factor if width is None else width)


def flat(fields: Sequence[str]) -> tuple[str, ...]:
    """``fields`` with ``resnet`` in its flat form (:data:`FLAT_RESNET`), for key=value options."""
    return tuple(g for f in fields for g in (FLAT_RESNET if f == "resnet" else (f,)))


def arch_value(cfg: Any, field: str) -> Any:
    """``field`` of a ViTConfig (or of a mapping of field values), flat names included, in the form configs compare
    in: sizes as (h, w) pairs, sequences as tuples, a ResNet mapping as :class:`ResNetConfig`; a flat ResNet field
    of a model without a ResNet stem is None."""
    if isinstance(cfg, Mapping):
        v = cfg[field]
    elif field in FLAT_RESNET:
        r = cfg.resnet
        v = None if r is None else (r.num_layers if field == "resnet_layers" else r.width_factor)
    else:
        v = getattr(cfg, field)
    if field in ("patch_size", "image_size") and v is not None:
        return as_hw(v, field)
    if field == "resnet":
        return resnet_config(v)
    return tuple(v) if isinstance(v, list | tuple) else v


def arch_values(cfg: Any, fields: Sequence[str]) -> dict[str, Any]:
    """``{field: arch_value(cfg, field)}`` for ``fields``."""
    return {k: arch_value(cfg, k) for k in fields}


def arch_diff(a: Any, b: Any, fields: Sequence[str] = ARCH_FIELDS) -> list[tuple[str, Any, Any]]:
    """``(field, a's value, b's value)`` for each of ``fields`` where ``a`` and ``b`` differ, in ``fields`` order
    (values as :func:`arch_value` gives them). ``a`` and ``b``: ViTConfigs or mappings of field values (a mapping
    ``a`` compares only the fields it holds: the ones a user set)."""
    if isinstance(a, Mapping):
        fields = [f for f in fields if f in a]
    diff = []
    for f in fields:
        va, vb = _comparable(a, f), _comparable(b, f)
        if va != vb:
            diff.append((f, va, vb))
    return diff


def _comparable(cfg: Any, field: str) -> Any:
    try:
        return arch_value(cfg, field)
    except ValueError:  # not a valid value (a caller's hint of the wrong type): it differs from every valid one
        return cfg[field] if isinstance(cfg, Mapping) else getattr(cfg, field)


def has_class_token(classifier: str) -> bool:
    """Whether a transformer with this classifier reads a class token."""
    return classifier in TOKEN_CLASSIFIERS


def class_token_mismatch(classifier: str, file_has_one: bool) -> str | None:
    """Why weights with (or without) a class token cannot serve ``classifier``, ready for ``", but the file ..."``;
    None when they can."""
    needs = has_class_token(classifier)
    if needs == file_has_one:
        return None
    return f"classifier={classifier!r} {'needs' if needs else 'has no'} class token"


def posemb_grid(num_pos: int, class_token: bool, cls_row_optional: bool = True) -> tuple[int, bool]:
    """(side of the square token grid, whether the embeddings hold a class-token row) of ``num_pos`` learned position
    embeddings. ``cls_row_optional``: a class token's row may be absent (big_vision and timm's ``no_embed_class`` add
    position embeddings before prepending the token). ValueError when they form no square grid."""
    prefix = 1 if class_token else 0
    side = math.isqrt(num_pos - prefix) if num_pos >= prefix else 0
    if side * side == num_pos - prefix:
        return side, bool(prefix)
    side = math.isqrt(num_pos)
    if class_token and cls_row_optional and side * side == num_pos:
        return side, False
    raise ValueError(f"{num_pos} position embeddings do not form a square grid (+{prefix} class token)")
