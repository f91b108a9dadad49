"""The feature extractor: truncation, fusion, trimming, output shapes, freezing, names."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from gpuksvd.features import FeatureExtractor
from tests.support.backbones import create_backbone, resnet_forward


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weights_round_trip_and_concat_equals_manual_pooling(tmp_path, suffix):
    model, _ = create_backbone("resnet18", "random")
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(model.state_dict(), str(path))
    else:
        torch.save({"state_dict": model.state_dict()}, path)  # a wrapped checkpoint
    layers = ["layer1", "layer2", "layer3"]
    concat = FeatureExtractor("resnet18", layers, weights=str(path), fusion="concat")
    separate = FeatureExtractor("resnet18", layers, weights=str(path), fusion="separate")
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        layer1, layer2, layer3, _ = resnet_forward(model, images)
    expected = torch.cat([F.avg_pool2d(layer1, 4), F.avg_pool2d(layer2, 2), layer3], dim=1)
    (fused,) = concat(images)
    torch.testing.assert_close(fused, expected, rtol=0, atol=1e-5)
    assert concat.set_names == ["layer1+layer2+layer3"]
    assert concat.channels == [64 + 128 + 256]
    assert concat.describe()["weights"] == f"file:{path.resolve()}"
    outputs = separate(images)
    assert separate.set_names == layers
    assert len(outputs) == 3
    for output, reference in zip(outputs, (layer1, layer2, layer3)):
        torch.testing.assert_close(output, reference, rtol=0, atol=1e-5)



def test_extractor_reads_block26_of_b5():
    extractor = FeatureExtractor(
        "efficientnet_b5", ["block26", "block27"], weights="random", fusion="separate"
    )
    assert extractor.channels[0] == 176
    assert extractor.strides == [16, 32]
    assert extractor.output_shapes((224, 224))[0] == (176, 14, 14)
    assert extractor(torch.randn(1, 3, 64, 64))[0].shape == (1, 176, 4, 4)


def test_resnet_layers_channels_and_strides():
    layers = ["layer1", "layer2", "layer3", "layer4"]
    resnet18 = FeatureExtractor("resnet18", layers, weights="random", fusion="separate")
    assert resnet18.channels == [64, 128, 256, 512]
    assert resnet18.strides == [4, 8, 16, 32]


@pytest.mark.parametrize(
    "name, layers", [("resnet18", ["layer1", "layer2", "layer4"]),
                     ("efficientnet_lite0", ["block0", "block3", "block10", "block15"])]
)
def test_output_shapes_match_forward_at_odd_sizes(name, layers):
    for fusion in ("separate", "concat"):
        extractor = FeatureExtractor(name, layers, weights="random", fusion=fusion)
        outputs = extractor(torch.randn(1, 3, 100, 76))
        assert [tuple(o.shape[1:]) for o in outputs] == extractor.output_shapes((100, 76))


def test_trim_keeps_first_square_number_of_channels():
    kwargs = {"weights": "random", "fusion": "separate"}
    full = FeatureExtractor("resnet18", ["layer1", "layer2"], **kwargs)
    trimmed = FeatureExtractor("resnet18", ["layer1", "layer2"], trim_to_square=True, **kwargs)
    trimmed.load_state_dict(full.state_dict())
    assert trimmed.channels == [64, 121]  # 64 = 8², 128 -> 11² = 121
    images = torch.randn(1, 3, 64, 64)
    for short, long, channels in zip(trimmed(images), full(images), trimmed.channels):
        torch.testing.assert_close(short, long[:, :channels], rtol=0, atol=0)
    concat = FeatureExtractor("resnet18", ["layer2", "layer3"], weights="random",
                              trim_to_square=True)
    assert concat.channels == [361]  # 128 + 256 = 384 -> 19²
    assert concat(images)[0].shape[1] == 361


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown backbone 'resnet19'.*resnet18.*wide_resnet50_2"):
        FeatureExtractor("resnet19", ["layer1"], weights="random")
    with pytest.raises(ValueError, match=r"\['layer5'\].*layer1, layer2, layer3, layer4"):
        FeatureExtractor("resnet18", ["layer3", "layer5"], weights="random")
    with pytest.raises(ValueError, match=r"\['block39'\].*block0, block1, \.\.\., block38"):
        FeatureExtractor("efficientnet_b5", ["block39"], weights="random")
    with pytest.raises(ValueError, match="unknown fusion 'sum'.*concat, separate"):
        FeatureExtractor("resnet18", ["layer1"], weights="random", fusion="sum")
    with pytest.raises(ValueError, match="repeat"):
        FeatureExtractor("resnet18", ["layer1", "layer1"], weights="random")


# --- truncation, freezing, description --------------------------------------------------------

def test_stops_after_the_deepest_requested_layer():
    extractor = FeatureExtractor("resnet18", ["layer1"], weights="random")
    model, _ = create_backbone("resnet18", "random")
    kept = sum(p.numel() for m in (model.conv1, model.bn1, model.layer1) for p in m.parameters())
    assert sum(p.numel() for p in extractor.parameters()) == kept
    ran = []
    for unit in extractor.units:
        unit.register_forward_hook(lambda module, args, output: ran.append(output.shape[1]))
    (features,) = extractor(torch.randn(1, 3, 64, 64))
    assert ran == [64] and features.shape == (1, 64, 16, 16)
    b5 = FeatureExtractor("efficientnet_b5", ["block3", "block1"], weights="random")
    assert len(b5.units) == 4 and b5.set_names == ["block3+block1"]


def test_frozen_eval_and_describe_is_json():
    extractor = FeatureExtractor("efficientnet_lite0", ["block10"], weights="random")
    extractor.train()
    assert not extractor.training and not any(m.training for m in extractor.modules())
    assert not any(p.requires_grad for p in extractor.parameters())
    assert extractor(torch.randn(1, 3, 32, 32))[0].grad_fn is None
    description = json.loads(json.dumps(extractor.describe()))
    assert description["backbone"] == "efficientnet_lite0"
    assert description["layers"] == ["block10"]
    assert description["channels"] == [112]
    assert description["weights"] == "random"
    assert description["mean"] == [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        extractor(torch.randn(3, 32, 32))
