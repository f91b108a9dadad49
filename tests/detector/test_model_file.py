"""Model files: round trip, atomic writes, descriptions, refusals of another backbone."""
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from gpuksvd.data import Preprocess
from gpuksvd.detector import PSDL, PSDLConfig, load_model, read_description, save_model
from gpuksvd.detector.model_file import FORMAT
from gpuksvd.features import build_extractor


@pytest.fixture(scope="module")
def model():
    extractor = build_extractor("resnet18", ["layer2"], weights="random")
    model = PSDL(extractor, PSDLConfig(n_atoms=16, n_iter=1), Preprocess(resize=80, crop=64))
    gen = torch.Generator().manual_seed(0)
    model.fit_features([torch.randn(30, 128, 8, 8, generator=gen)], ["a"] * 30)
    return model


def test_round_trip_gives_the_same_maps_and_settings(model, tmp_path):
    path = save_model(model, tmp_path / "sub" / "model.safetensors")
    loaded = load_model(path)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded.anomaly_maps(images), model.anomaly_maps(images))
    assert loaded.preprocess == model.preprocess and loaded.image_size == (64, 64)
    assert loaded.train_categories == ["a"] * 30 and torch.equal(loaded.train_scores_, model.train_scores_)
    assert loaded.config == model.config
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]  # no temporary file left


def test_description_is_readable_without_the_tensors(model, tmp_path):
    path = save_model(model, tmp_path / "model.safetensors")
    description = read_description(path)
    assert description["extractor"]["backbone"] == "resnet18" and description["config"]["n_atoms"] == 16
    assert description["preprocess"]["resize"] == [80, 80] and description["preprocess"]["crop"] == [64, 64]
    json.dumps(description)


def test_an_interrupted_save_keeps_the_old_file(model, tmp_path, monkeypatch):
    path = save_model(model, tmp_path / "model.safetensors")
    before = path.read_bytes()
    import gpuksvd.detector.model_file as model_file

    def broken(tensors, filename, metadata=None):
        open(filename, "wb").write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(model_file, "save_file", broken)
    with pytest.raises(KeyboardInterrupt):
        save_model(model, path)
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_files_that_are_not_models_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model file at"):
        read_description(tmp_path / "absent.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable gpuksvd model file"):
        read_description(tmp_path / "junk.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"format": "other"})
    with pytest.raises(ValueError, match=f"expected '{FORMAT}'"):
        read_description(tmp_path / "other.safetensors")


def test_another_backbone_layers_or_fusion_are_refused(model, tmp_path):
    path = save_model(model, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="trained with backbone 'resnet18'.*not 'efficientnet_lite0'"):
        load_model(path, backbone="efficientnet_lite0")
    with pytest.raises(ValueError, match=r"trained on layers \['layer2'\]"):
        load_model(path, backbone="resnet18", layers=["layer3"])
    with pytest.raises(ValueError, match="backbone.fusion=concat, not separate"):
        load_model(path, fusion="separate")


def test_files_with_only_resize_and_crop_recorded_still_load(model, tmp_path):
    # Model files written before the whole preprocessing was recorded kept three keys.
    description = model.describe()
    description["preprocess"] = {"resize": 80, "crop": 64, "pre_crop": None}
    tensors = {name: value for name, value in model.state_dict().items() if not name.startswith("extractor.")}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"format": FORMAT, "description": json.dumps(description)})
    loaded = load_model(tmp_path / "old.safetensors")
    assert loaded.preprocess == Preprocess(resize=80, crop=64)


def test_files_respect_the_umask(model, tmp_path):
    old = os.umask(0o027)
    try:
        path = save_model(model, tmp_path / "model.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640


def test_the_kernel_reaches_the_engine_and_a_model_scores_where_its_kernel_cannot_run(model, tmp_path, monkeypatch):
    # ksvd.kernel is how to compute, not what: a model fitted with kernel="triton" (CUDA) loads on a
    # machine without it and scores with "auto", saying so; the maps are those of the torch path.
    import gpuksvd.detector.model as model_module

    seen = []
    real = model_module.batch_omp
    monkeypatch.setattr(model_module, "batch_omp", lambda *a, **k: seen.append(k["kernel"]) or real(*a, **k))
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    model.config.kernel = "torch"
    try:
        expected = model.anomaly_maps(images)
        assert seen == ["torch"]
        model.config.kernel = "triton"
        path = save_model(model, tmp_path / "model.safetensors")
    finally:
        model.config.kernel = "auto"
    assert read_description(path)["config"]["kernel"] == "triton"
    monkeypatch.setattr("gpuksvd.sparse.dispatch._resolve_triton", lambda like: (_ for _ in ()).throw(
        ValueError("kernel='triton' runs on CUDA float32/float64 tensors")))
    with pytest.warns(UserWarning, match="fitted with kernel='triton', which cannot run here"):
        loaded = load_model(path)
    assert loaded.config.kernel == "auto"
    torch.testing.assert_close(loaded.anomaly_maps(images), expected, rtol=1e-4, atol=1e-4)
