"""Full timm classifiers of the project's backbones, for tests that compare against them."""
from __future__ import annotations

from torch import nn

from gpuksvd.features.backbones import get_spec
from gpuksvd.features.weights import build_model, load_weights


def create_backbone(backbone: str, weights: str = "pretrained") -> tuple[nn.Module, str]:
    """The full timm classifier of ``backbone`` with its weights (classifier head included, so
    that a strict load checks every key), in eval mode, and where the weights came from."""
    spec = get_spec(backbone)
    model = build_model(spec)
    source = load_weights(model, spec, weights)
    return model.eval(), source


def resnet_forward(model, images):
    """timm ResNet layer outputs, written out from timm's forward_features."""
    x = model.maxpool(model.act1(model.bn1(model.conv1(images))))
    outputs = []
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = layer(x)
        outputs.append(x)
    return outputs
