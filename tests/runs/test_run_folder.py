"""What a run folder holds: patch errors split by anomalous cells, JSON-safe numbers."""
import math

import numpy as np
import torch

from gpuksvd.runs.loops import Predictions
from gpuksvd.runs.run_folder import device_name, finite_or_none, save_patch_errors


def test_patch_errors_mark_the_cells_that_hold_anomalous_pixels(tmp_path):
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[1, 0:3, 9:11] = True  # top-right cell of a 2x2 grid
    descriptors = [torch.rand(2, 2, 2, 2)]
    predictions = Predictions(image_scores=torch.rand(2), maps=torch.rand(2, 16, 16), labels=torch.tensor([0, 1]),
                              masks=masks, has_mask=torch.tensor([True, True]), descriptors=descriptors)
    path = save_patch_errors(predictions, tmp_path / "patch_errors.npz")
    with np.load(path) as data:
        assert data["anomalous_0"].tolist() == [[[False, False], [False, False]], [[False, True], [False, False]]]
        assert np.array_equal(data["errors_0"], descriptors[0][..., 1].numpy())
        assert np.array_equal(data["l1_0"], descriptors[0][..., 0].numpy())


def test_numbers_and_names_for_metrics_json():
    assert finite_or_none(0.5) == 0.5 and finite_or_none(math.nan) is None and finite_or_none(math.inf) is None
    assert device_name(torch.device("cpu")).startswith("cpu (")
