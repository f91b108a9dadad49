"""The figures a run writes: overlays, training error per location, overlay choice."""
import numpy as np
import torch
from PIL import Image

from gpuksvd.runs.plots import caption, denormalize, pick_overlay_indices, save_location_error, save_overlays


def test_overlays_are_written_one_per_image_with_a_truth_panel_only_with_a_mask(tmp_path):
    images = torch.rand(2, 3, 32, 32)
    maps = torch.rand(2, 32, 32)
    masks = [torch.zeros(32, 32, dtype=torch.bool), None]  # the second image has no mask
    written = save_overlays(images, ["a", "b"], maps, masks, torch.tensor([1.0, 2.0]), tmp_path / "overlays",
                            labels=torch.tensor([0, 1]), thresholds=torch.tensor([1.5, 1.5], dtype=torch.float64))
    assert [path.name for path in written] == ["a.png", "b.png"]
    with_truth, without = (Image.open(path) for path in written)
    assert with_truth.width > 1.3 * without.width  # three panels against two
    pixels = np.asarray(with_truth.convert("L"), dtype=float)
    assert pixels.std() > 10  # not blank


def test_captions_say_the_decision():
    assert caption(2.0, 1.5, None) == "score 2.00 ≥ threshold 1.50: anomalous"
    assert caption(1.0, 1.5, 0) == "score 1.00 < threshold 1.50: normal\n(truth: normal)"
    assert caption(1.0, float("nan"), None) == "score 1.00"


def test_location_error_plot(tmp_path):
    errors = torch.linspace(1, 0.5, 3)[:, None] * torch.rand(1, 6)
    path = save_location_error(errors, (2, 3), tmp_path / "error.png", title="t")
    assert np.asarray(Image.open(path).convert("L"), dtype=float).std() > 10


def test_denormalize_inverts_the_input_normalisation():
    images = torch.rand(1, 3, 4, 4)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    normalised = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(denormalize(normalised, mean, std), images, atol=1e-6)


def test_overlay_choice_spreads_over_categories_and_adds_one_normal():
    labels = torch.tensor([1, 1, 1, 0, 1, 0])
    categories = ["a", "a", "a", "a", "b", "b"]
    chosen = pick_overlay_indices(labels, categories, 3)
    assert chosen == [0, 4, 3]
    assert pick_overlay_indices(labels, categories, 2) == [0, 4]  # too few for a normal one
