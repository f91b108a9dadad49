"""Preprocess: output sizes, image/mask alignment under rotation and crop, seeded randomness."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gpuksvd.data import Preprocess


def square_pair(height: int, width: int, box: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A black image with a white off-center rectangle, and the same rectangle as mask."""
    top, left, h, w = box
    mask = torch.zeros(1, height, width, dtype=torch.uint8)
    mask[:, top:top + h, left:left + w] = 1
    return (mask * 255).expand(3, -1, -1).contiguous(), mask


@pytest.mark.parametrize(
    ("settings", "size"),
    [
        (dict(resize=256, crop=224), (224, 224)),  # MVTec AD
        (dict(resize=256, crop=None), (256, 256)),  # BTAD, MTD
        (dict(resize=(500, 250), crop=None, pre_crop=(1000, 500)), (500, 250)),  # KolektorSDD
        (dict(resize=256, crop=224, random_rotation=10, random_crop=True), (224, 224)),  # Rd-MVTec
    ],
)
def test_output_sizes(settings, size):
    preprocess = Preprocess(**settings)
    assert preprocess.output_size == size
    image, mask = square_pair(1240, 500, (600, 200, 40, 30))  # KSDD-like, not square
    out_image, out_mask = preprocess(image, mask, index=3)
    assert out_image.shape == (3, *size) and out_mask.shape == (1, *size)
    assert out_image.dtype == torch.uint8 and out_mask.dtype == torch.uint8


def test_pre_crop_keeps_the_center():
    # 1240 x 500 -> center 1000 x 500 drops 120 rows at the top: a mark at row 130 lands at row 10
    image, mask = square_pair(1240, 500, (130, 0, 10, 500))
    _, out_mask = Preprocess(resize=(1000, 500), crop=None, pre_crop=(1000, 500))(image, mask, 0)
    rows = torch.nonzero(out_mask[0].any(dim=1)).flatten()
    assert rows.tolist() == list(range(10, 20))


def test_center_crop_position():
    image, mask = square_pair(256, 256, (16, 16, 1, 1))  # the first pixel the 224 crop keeps
    out_image, out_mask = Preprocess(resize=256, crop=224)(image, mask, 0)
    assert out_mask[0, 0, 0] == 1 and out_mask.sum() == 1 and out_image[:, 0, 0].tolist() == [255] * 3


def test_rotation_and_random_crop_keep_image_and_mask_aligned():
    # resize to the same size so the only interpolation is the rotation: alignment must be exact
    preprocess = Preprocess(resize=64, crop=48, random_rotation=10, random_crop=True, seed=5)
    image, mask = square_pair(64, 64, (20, 14, 18, 9))
    moved = 0
    for index in range(20):
        out_image, out_mask = preprocess(image, mask, index)
        assert torch.equal(out_image[0] > 127, out_mask[0] > 0)
        assert 0 < out_mask.sum() < mask.sum() * 1.2
        moved += not torch.equal(out_mask, preprocess(image, mask, index + 100)[1])
    assert moved >= 18  # different images get different rotations and crops


def test_alignment_after_real_resize():
    preprocess = Preprocess(resize=256, crop=224, random_rotation=10, random_crop=True, seed=1)
    image, mask = square_pair(900, 900, (300, 200, 250, 120))
    for index in range(5):
        out_image, out_mask = preprocess(image, mask, index)
        bright, inside = out_image[0] > 127, out_mask[0] > 0
        iou = (bright & inside).sum() / (bright | inside).sum()
        assert iou > 0.97, f"image {index}: IoU of bright pixels and mask {iou:.3f}"


def test_random_draws_are_seeded_per_image_and_in_range():
    preprocess = Preprocess(resize=256, crop=224, random_rotation=10, random_crop=True, seed=7)
    draws = np.array([preprocess.sample(i) for i in range(400)])
    assert np.array_equal(draws, np.array([Preprocess(256, 224, None, 10, True, 7).sample(i) for i in range(400)]))
    # order does not matter: each image's draw depends only on (seed, index)
    assert [preprocess.sample(i) for i in (5, 3)] == [preprocess.sample(5), preprocess.sample(3)]
    angles, tops, lefts = draws.T
    assert angles.min() >= -10 and angles.max() <= 10 and angles.min() < -9 and angles.max() > 9
    assert abs(angles.mean()) < 1.0  # uniform on [-10, 10]: mean 0, std 5.8 / sqrt(400) = 0.29
    assert tops.min() == 0 and tops.max() == 32 and lefts.min() == 0 and lefts.max() == 32
    other = np.array([Preprocess(256, 224, None, 10, True, 8).sample(i) for i in range(400)])
    assert not np.array_equal(draws, other)


def test_no_random_step_means_identity_draws():
    assert Preprocess(resize=256, crop=224, seed=3).sample(9) == (0.0, 16, 16)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(resize=256, crop=300), "crop .* is larger"),
        (dict(resize=256, crop=None, random_crop=True), "random_crop=True needs a crop size"),
        (dict(resize=(256, 0)), "resize must be a positive int"),
        (dict(resize=256, random_rotation=-5), "random_rotation must be in"),
    ],
)
def test_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        Preprocess(**settings)


@pytest.mark.parametrize("interpolation, pil_filter", [("bicubic", "BICUBIC"), ("lanczos", "LANCZOS")])
def test_pil_filters_resize_exactly_as_pil(interpolation, pil_filter):
    from PIL import Image

    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    image = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    mask = torch.zeros(1, 50, 70, dtype=torch.uint8)
    resized, _ = Preprocess(resize=(40, 30), crop=None, interpolation=interpolation)(image, mask, 0)
    expected = np.array(Image.fromarray(array).resize((30, 40), getattr(Image.Resampling, pil_filter)))
    assert np.array_equal(resized.permute(1, 2, 0).numpy(), expected)


def test_authors_filter_per_dataset_and_bad_names():
    from gpuksvd.data import resolve_interpolation

    assert resolve_interpolation("mvtec", "authors") == "bicubic" and resolve_interpolation("btad", "authors") == "lanczos"
    assert resolve_interpolation("ksdd", "bilinear") == "bilinear"
    with pytest.raises(ValueError, match="interpolation must be one of bilinear, bicubic, lanczos"):
        Preprocess(interpolation="nearest")
