"""torch.hub entry points: ``torch.hub.load('OWNER/vitkit', 'vit_base_patch16_224', pretrained=True)``.

Every timm architecture name vitkit builds is an entry (``torch.hub.list``), taking what ``vitkit.create_model``
takes: ``pretrained=True`` (timm's default tag's official weights) or a source, ``num_classes``, ``image_size`` and
config fields. A pretrained tag is passed as ``tag=``: ``torch.hub.load(..., 'vit_base_patch16_224',
pretrained=True, tag='augreg_in21k')``. The official names (``ViT-B_16``) are not Python identifiers; ``vit`` takes
any name: ``torch.hub.load(..., 'vit', name='R50+ViT-B_16', pretrained=True)``.
"""

import os
import sys

dependencies = ["torch", "numpy", "safetensors", "PIL", "huggingface_hub"]

try:
    import vitkit
    from vitkit.models.timm_names import TIMM_NAMES
except ImportError:  # a checkout torch.hub fetched: its src/ folder holds the package
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))
    import vitkit
    from vitkit.models.timm_names import TIMM_NAMES


def vit(name: str, pretrained=False, **kwargs):
    """Any model name ``vitkit.list_models()`` lists (official or timm, with an optional ``.TAG``)."""
    return vitkit.create_model(name, pretrained=pretrained, **kwargs)


def _entry(arch: str):
    def entry(pretrained=False, tag: str | None = None, **kwargs):
        return vitkit.create_model(f"{arch}.{tag}" if tag else arch, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = arch
    entry.__doc__ = f"timm's {arch}, built by vitkit (see vitkit.create_model)."
    return entry


globals().update({_arch: _entry(_arch) for _arch in TIMM_NAMES})
