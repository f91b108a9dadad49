"""Tests of gpuksvd.backbones, gpuksvd.backbone_weights and gpuksvd.features.

Random weights and small inputs wherever the weights do not matter; the shipped
EfficientNet-Lite weights are checked by classifying scikit-image's cat photo.
"""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from gpuksvd.backbone_weights import lite_weights_file, read_state_dict
from gpuksvd.backbones import BACKBONES, create_backbone, probe_units, split_units
from gpuksvd.features import FeatureExtractor

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "backbone"
IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _cat_image(mean, std):
    """skimage's Chelsea the cat, (1, 3, 224, 224), normalised."""
    from skimage import data

    image = torch.from_numpy(data.chelsea()).permute(2, 0, 1)[None].float() / 255
    image = F.interpolate(image, size=(224, 224), mode="bilinear", antialias=True)
    return (image - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def _no_network(*args, **kwargs):
    raise socket.gaierror(-2, "Name or service not known")


def _resnet_forward(model, images):
    """timm ResNet layer outputs, written out from timm's forward_features."""
    x = model.maxpool(model.act1(model.bn1(model.conv1(images))))
    outputs = []
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = layer(x)
        outputs.append(x)
    return outputs


# --- pretrained Lite weights ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_lite_weights_load_strictly_and_see_a_cat(name):
    model, source = create_backbone(name, "pretrained")
    spec = BACKBONES[name]
    assert source.startswith(f"package:{spec.lite_package}/")
    # every tensor of the shipped file landed in the model (strict load, no silent init)
    shipped = torch.load(lite_weights_file(spec), map_location="cpu", weights_only=True)
    assert torch.equal(model.conv_stem.weight, shipped["_conv_stem.weight"])
    assert torch.equal(model.classifier.weight, shipped["_fc.weight"])
    with torch.no_grad():
        probabilities = model(_cat_image(spec.mean, spec.std)).softmax(-1)[0]
    top1 = int(probabilities.argmax())
    assert top1 in IMAGENET_CATS, f"top-1 class {top1} (p={probabilities.max():.2f}) is no cat"
    assert probabilities[list(IMAGENET_CATS)].sum() > 0.5


def test_pretrained_offline_fails_fast_with_the_fix(monkeypatch, tmp_path):
    """No network, nothing cached: a RuntimeError naming the fix, never random weights."""
    import huggingface_hub.constants

    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    with pytest.raises(RuntimeError, match="no network") as error:
        FeatureExtractor("resnet18", ["layer3"], weights="pretrained")
    message = str(error.value)
    assert "backbone.weights=/path/to/file.pth" in message
    assert "resnet18.tv_in1k" in message


def test_pretrained_offline_uses_a_filled_cache(monkeypatch, tmp_path):
    """The fix the offline message suggests: weights already in the Hugging Face cache."""
    import huggingface_hub.constants
    from safetensors.torch import save_file

    model, _ = create_backbone("resnet18", "random")
    snapshot = tmp_path / "models--timm--resnet18.tv_in1k" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    save_file(model.state_dict(), str(snapshot / "model.safetensors"))
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    extractor = FeatureExtractor("resnet18", ["layer2"], weights="pretrained")
    assert extractor.weights_source == "timm:resnet18.tv_in1k"
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = _resnet_forward(model, images)[1]
    torch.testing.assert_close(extractor(images)[0], expected, rtol=0, atol=1e-5)


def test_missing_weights_file_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither 'pretrained', 'random'"):
        FeatureExtractor("resnet18", ["layer1"], weights=str(tmp_path / "absent.pth"))


def test_weights_of_another_backbone_are_refused(tmp_path):
    model, _ = create_backbone("resnet18", "random")
    path = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(ValueError, match="do not fit backbone 'efficientnet_lite0'.*missing keys"):
        FeatureExtractor("efficientnet_lite0", ["block10"], weights=str(path))


# --- local weight files -----------------------------------------------------------------------

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
        layer1, layer2, layer3, _ = _resnet_forward(model, images)
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


def _to_efficientnet_pytorch_names(model):
    """timm EfficientNet state dict under EfficientNet-PyTorch's names (its module layout)."""
    top = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1",
           "classifier": "_fc"}
    squeeze = {"conv_reduce": "_se_reduce", "conv_expand": "_se_expand"}
    expanded = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv",
                "bn2": "_bn1", "conv_pwl": "_project_conv", "bn3": "_bn2"}
    separable = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv",
                 "bn2": "_bn2"}
    flat_index = {}
    for stage, blocks in enumerate(model.blocks):
        for i, block in enumerate(blocks):
            flat_index[(stage, i)] = (len(flat_index), hasattr(block, "conv_pwl"))
    renamed = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if parts[0] != "blocks":
            renamed[".".join([top[parts[0]]] + parts[1:])] = value
            continue
        index, is_expanded = flat_index[(int(parts[1]), int(parts[2]))]
        if parts[3] == "se":  # blocks.S.I.se.conv_reduce.weight
            module, parameter = squeeze[parts[4]], parts[5:]
        else:
            module, parameter = (expanded if is_expanded else separable)[parts[3]], parts[4:]
        renamed[".".join(["_blocks", str(index), module] + parameter)] = value
    return renamed


def test_efficientnet_pytorch_names_load_with_squeeze_excitation(tmp_path):
    """B5 has SE layers and both block types; its EfficientNet-PyTorch naming loads strictly."""
    model, _ = create_backbone("efficientnet_b5", "random")
    state_dict = _to_efficientnet_pytorch_names(model)
    assert any("_se_reduce" in key for key in state_dict)
    path = tmp_path / "efficientnet-b5.pth"
    torch.save(state_dict, path)
    extractor = FeatureExtractor("efficientnet_b5", ["block8"], weights=str(path))
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model.blocks[:2](model.bn1(model.conv_stem(images)))  # stages 0-1 = blocks 0..7
        expected = model.blocks[2][0](expected)
    torch.testing.assert_close(extractor(images)[0], expected, rtol=0, atol=1e-5)


# --- layer names, channels and strides ---------------------------------------------------------

@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_units_agree_with_timm_feature_info_and_default_layers(name):
    """Channels/strides read from the module match timm's metadata; defaults end stride 16."""
    spec = BACKBONES[name]
    with torch.device("meta"):  # shapes only: skip the weight initialisation
        model = timm.create_model(spec.timm_name).eval()
    stem, units = split_units(model, spec.family)
    probed = probe_units(stem, units, size=64)
    for info in model.feature_info:
        if spec.family == "resnet":
            unit = info["module"]
        else:  # stage "blocks.S" ends at the last block of stage S
            stage = int(info["module"].split(".")[1])
            unit = f"block{sum(len(s) for s in model.blocks[: stage + 1]) - 1}"
        if unit in probed:
            assert probed[unit] == (info["num_chs"], info["reduction"]), unit
    stride16 = [unit for unit, (_, stride) in probed.items() if stride == 16]
    assert spec.default_layers == (stride16[-1],)


PAPER_BLOCKS = {"efficientnet_b5": ("block26", 176), "efficientnet_b6": ("block30", 200),
                "efficientnet_b7": ("block37", 224)}


@pytest.mark.parametrize("name", sorted(PAPER_BLOCKS))
def test_paper_blocks_are_last_of_the_14x14_stage(name):
    """The issue's numbers: last block at stride 16 (14x14 at 224 input) and its channels."""
    block, channels = PAPER_BLOCKS[name]
    with torch.device("meta"):
        model = timm.create_model(BACKBONES[name].timm_name).eval()
    probed = probe_units(*split_units(model, "efficientnet"), size=224)
    assert probed[block] == (channels, 16)
    following = f"block{int(block[5:]) + 1}"
    assert probed[following][1] == 32


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


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_normalisation_matches_timm_pretrained_config(name):
    spec = BACKBONES[name]
    config = timm.models.get_pretrained_cfg(spec.pretrained_tag)
    assert (spec.mean, spec.std) == (tuple(config.mean), tuple(config.std))
    assert spec.timm_name == spec.pretrained_tag.split(".")[0]


def test_backbone_configs_match_the_specs():
    files = sorted(CONF_DIR.glob("*.yaml"))
    assert sorted(f.stem for f in files) == sorted(BACKBONES)
    for path in files:
        config = OmegaConf.load(path)
        assert config.name == path.stem
        assert tuple(config.layers) == BACKBONES[path.stem].default_layers
        assert (config.fusion, config.trim_to_square, config.weights) == (
            "concat", False, "pretrained")


def test_read_state_dict_strips_data_parallel_prefix(tmp_path):
    path = tmp_path / "wrapped.pt"
    torch.save({"model": {"module.weight": torch.ones(2)}}, path)
    assert list(read_state_dict(path)) == ["weight"]
