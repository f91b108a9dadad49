"""The report's figures, drawn from the errors hand-written run folders recorded."""
import numpy as np
import pytest
from PIL import Image

from gpuksvd.sweeps import FIGURES, build_table, load_runs, patch_errors, train_errors
from tests.support.sweeps import GROUPS, fake_run


@pytest.fixture
def table(tmp_path):
    for n_iter in (1, 2):
        folder = tmp_path / f"n{n_iter}"
        fake_run(folder, {"ksvd.n_iter": n_iter}, {"dataset": {"categories": None}, "ksvd": {"n_iter": n_iter}},
                 {"bottle": (0.5, 0.6), "grid": (0.7, 0.8)}, GROUPS)
        rng = np.random.default_rng(n_iter)
        np.savez(folder / "patch_errors.npz", labels=np.array([0, 1]), errors_0=rng.random((2, 1, 2)),
                 l1_0=rng.random((2, 1, 2)), anomalous_0=np.array([[[False, False]], [[True, False]]]))
    return build_table(load_runs(tmp_path))


def test_training_errors_and_patch_errors_come_from_the_run_folders(table):
    errors, grid = train_errors(table.columns[0])["layer3"]
    assert grid == (1, 2) and np.array_equal(errors, [[0.9, 0.8], [0.5, 0.4]])
    mse, _ = train_errors(table.columns[0], "mse")["layer3"]  # the paper's quantity
    assert np.array_equal(mse, [[9.0, 8.0], [5.0, 4.0]])
    with pytest.raises(ValueError, match="unknown training-error quantity 'rmse'"):
        train_errors(table.columns[0], "rmse")
    normal, anomalous = patch_errors(table.columns[0])
    assert normal.shape == (3,) and anomalous.shape == (1,)


@pytest.mark.parametrize("quantity", ["relative", "mse"])
@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_figure_is_drawn_and_not_blank(table, tmp_path, name, quantity):
    path = FIGURES[name](table, tmp_path / name, quantity)
    pixels = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 300 and pixels.std() > 10, name
