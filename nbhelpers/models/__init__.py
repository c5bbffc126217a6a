"""Model architectures: CLIP towers, classification and fusion heads, SSL backbones, unimodal baselines.

Submodules: ``clip`` (open_clip models, tiny configs in ``model_configs/``), ``heads``, ``fusion``,
``backbones`` (open_clip / Hugging Face CLIP, BLIP, BLIP-2 behind one interface), ``ssl``, ``unimodal``,
``cass_mm``, ``counts``. The main names are re-exported here, imported on first use so that importing
one submodule does not pull in ``transformers``.
"""

import importlib

_EXPORTS = {
    "create_clip": "clip",
    "register_model_configs": "clip",
    "TINY_VIT": "clip",
    "TINY_RN": "clip",
    "TransformerClassifierHead": "heads",
    "CLIPClassifier": "heads",
    "FusionHead": "fusion",
    "HatefulMemesClassifier": "fusion",
    "build_backbone": "backbones",
    "FeatureBackbone": "backbones",
    "build_ssl_backbone": "ssl",
    "DINOHead": "ssl",
    "BarlowTwinsProjector": "ssl",
    "TextClassifier": "unimodal",
    "ImageClassifier": "unimodal",
    "late_fusion": "unimodal",
    "CASSMM": "cass_mm",
    "parameter_counts": "counts",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
