"""The fit and predict loops: batches in dataset order, progress callback timings, early refusals."""
import math

import pytest
import torch
from torch.utils.data import Dataset

from gpuksvd.data import Preprocess
from gpuksvd.detector import PSDL, PSDLConfig
from gpuksvd.features import build_extractor
from gpuksvd.runs import ConfigError
from gpuksvd.runs.loops import KSVDProgress, evaluate_predictions, fit, predict, resolve_device


class Images(Dataset):
    """Random 64x64 images with labels, masks and two categories."""

    def __init__(self, n: int, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, 64, 64, generator=gen)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        mask = torch.zeros(1, 64, 64)
        label = index % 2
        if label:
            mask[:, 10:20, 10:20] = 1
        return {"image": self.images[index], "mask": mask, "has_mask": True, "label": label,
                "category": "ab"[index % 3 == 0], "defect_type": "x", "path": f"{index}.png"}


@pytest.fixture(scope="module")
def model():
    extractor = build_extractor("resnet18", ["layer2"], weights="random")
    model = PSDL(extractor, PSDLConfig(n_atoms=16, n_iter=2), Preprocess(resize=64, crop=None))
    fit(model, Images(24), batch_size=7, progress=False)
    return model


def test_fit_times_each_stage_and_keeps_the_categories(model):
    assert model.train_scores_.shape == (24,)
    assert model.train_categories == ["ab"[i % 3 == 0] for i in range(24)]
    extractor = build_extractor("resnet18", ["layer2"], weights="random")
    fresh = PSDL(extractor, PSDLConfig(n_atoms=16, n_iter=2), Preprocess(resize=64, crop=None))
    times = fit(fresh, Images(24), batch_size=24, progress=False)
    assert times.features > 0 and times.ksvd > 0 and 0 < times.ksvd_per_iter <= times.ksvd
    assert times.total >= times.features + times.ksvd - 1e-6


def test_predict_keeps_dataset_order_whatever_the_batch(model):
    whole = predict(model, Images(9, seed=1), batch_size=9, progress=False)
    batched = predict(model, Images(9, seed=1), batch_size=4, progress=False, keep_descriptors=True)
    assert torch.allclose(whole.image_scores, batched.image_scores, rtol=1e-5, atol=1e-5)
    assert torch.equal(batched.image_scores, batched.maps.flatten(1).amax(1))  # image score = map maximum
    assert batched.paths == [f"{i}.png" for i in range(9)] and batched.labels.tolist() == [i % 2 for i in range(9)]
    assert batched.descriptors[0].shape == (9, 8, 8, 2) and batched.masks.shape == (9, 64, 64)
    report = evaluate_predictions(batched, model, normalize="train")
    assert set(report.per_category) == {"a", "b"} and 0 <= report.mean["image_auroc"] <= 1


def test_fewer_training_images_than_atoms_fail_before_any_feature(monkeypatch):
    import gpuksvd.runs.loops as loops

    extractor = build_extractor("resnet18", ["layer2"], weights="random")
    model = PSDL(extractor, PSDLConfig(n_atoms=16), Preprocess(resize=64, crop=None))
    monkeypatch.setattr(loops, "extract_training_features", lambda *a, **k: pytest.fail("extracted features"))
    with pytest.raises(ValueError, match="need at least 16 training images.*got 10"):
        fit(model, Images(10), progress=False)
    with pytest.raises(ValueError, match="nothing to score"):
        predict(model, Images(0), progress=False)


def test_progress_times_every_iteration_of_every_set():
    tracker = KSVDProgress(n_iter=2, show=False)
    for name in ("a", "b"):
        for iteration in range(3):
            tracker(name, iteration, math.nan if iteration == 0 else 0.5)
    tracker.close()
    assert len(tracker.iteration_seconds) == 4
    assert tracker.seconds_per_iteration == pytest.approx(sum(tracker.iteration_seconds) / 2)
    assert KSVDProgress(n_iter=0, show=False).seconds_per_iteration == 0.0


def test_devices_are_resolved_or_refused():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available here: use device=cpu"):
            resolve_device("cuda")
    for name in ("gpu", "mps", "cuda:x", "cpu:1"):
        with pytest.raises(ConfigError, match=f"device='{name}' is not a device here: use device=auto"):
            resolve_device(name)
