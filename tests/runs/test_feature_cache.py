"""Training features on disk: extracted once, reused only for exactly the same extractor, data
and preprocessing, written atomically, and off with cache=false."""
import pytest
import torch

from gpuksvd.data import ImageDataset, ImageRecord, Preprocess, list_images
from gpuksvd.detector import PSDL, PSDLConfig
from gpuksvd.features import build_extractor
from gpuksvd.runs import loops
from gpuksvd.runs.feature_cache import cached_features_path, feature_key, load_features, save_features
from tests.support.data_trees import make_mvtec_tree


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUKSVD_CACHE", str(tmp_path / "cache"))
    root = make_mvtec_tree(tmp_path / "mvtec", categories=("bottle",), n_train=10, size=32)
    records = [ImageRecord(path, "bottle", "train", 0, "good") for path in list_images(root / "bottle" / "train" / "good")]
    extractor = build_extractor("resnet18", ["layer2"], weights="random")
    preprocess = Preprocess(resize=32, crop=None)
    model = PSDL(extractor, PSDLConfig(n_atoms=8, n_iter=1), preprocess)
    return model, ImageDataset(records, preprocess, extractor.mean, extractor.std), records, extractor


def test_the_second_fit_reads_the_features_it_cached(setup, monkeypatch):
    model, dataset, _, _ = setup
    loops.fit(model, dataset, progress=False, cache=True)
    path = cached_features_path(model, dataset)
    features, categories = load_features(path)
    assert features[0].shape == (10, 128, 4, 4) and categories == ["bottle"] * 10
    first = model.sets[0].dictionaries_.clone()
    monkeypatch.setattr(loops, "extract_training_features", lambda *a, **k: pytest.fail("extracted again"))
    loops.fit(model, dataset, progress=False, cache=True)
    assert torch.equal(model.sets[0].dictionaries_, first)


def test_the_key_changes_with_the_data_the_preprocessing_and_the_extractor(setup, tmp_path):
    model, dataset, records, extractor = setup
    key = feature_key(model, dataset)
    assert feature_key(model, ImageDataset(records[:-1], dataset.preprocess, extractor.mean, extractor.std)) != key
    other_geometry = Preprocess(resize=40, crop=32)
    assert feature_key(PSDL(extractor, PSDLConfig(n_atoms=8), other_geometry),
                       ImageDataset(records, other_geometry, extractor.mean, extractor.std)) != key
    other_layers = build_extractor("resnet18", ["layer1", "layer2"], weights="random")
    assert feature_key(PSDL(other_layers, PSDLConfig(n_atoms=8), dataset.preprocess), dataset) != key
    assert feature_key(PSDL(extractor, PSDLConfig(n_atoms=16, n_iter=5), dataset.preprocess), dataset) == key


def test_off_with_cache_false_and_a_broken_file_is_ignored(setup):
    model, dataset, _, _ = setup
    loops.fit(model, dataset, progress=False, cache=False)
    path = cached_features_path(model, dataset)
    assert not path.exists()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half a file")
    assert load_features(path) is None
    save_features(path, [torch.ones(2, 3, 1, 1)], ["a", "b"])
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # written atomically, nothing else left


def test_a_share_of_the_images_is_read_alone(tmp_path):
    # A process of a distributed run reads only its images' features.
    features = [torch.arange(5 * 3 * 2 * 2, dtype=torch.float32).view(5, 3, 2, 2), torch.randn(5, 4, 1, 1)]
    path = save_features(tmp_path / "f.safetensors", features, ["a", "a", "b", "b", "c"])
    share, categories = load_features(path, images=slice(1, 4))
    assert all(torch.equal(part, whole[1:4]) for part, whole in zip(share, features))
    assert categories == ["a", "b", "b"]
    empty, none = load_features(path, images=slice(5, 5))
    assert [part.shape[0] for part in empty] == [0, 0] and none == []
