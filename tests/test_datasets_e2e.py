"""A tiny train.py run per dataset option, on miniature trees in each published layout."""
import pytest
from data_trees import make_btad_tree, make_folder_tree, make_ksdd_tree, make_mtd_tree, make_mvtec_tree
from test_train import composed

from gpuksvd.runs import train_run

pytestmark = pytest.mark.slow

FAST = ["backbone=resnet18", "backbone.weights=random", "backbone.layers=[layer2]", "ksvd.n_atoms=8",
        "ksvd.n_iter=1", "num_workers=0", "progress=false", "n_overlays=0", "device=cpu"]


def run(tmp_path, overrides):
    result = train_run(composed(FAST + overrides), tmp_path / "run")
    assert (tmp_path / "run" / "metrics.json").is_file()
    return result


def test_rd_mvtec(tmp_path):
    root = make_mvtec_tree(tmp_path / "mvtec", categories=("bottle",), n_train=10, size=80)
    result = run(tmp_path, ["dataset=rd_mvtec", f"dataset.root={root}", "dataset.resize=80", "dataset.crop=64",
                            "dataset.train_seed=1", "dataset.test_seed=2"])
    assert result["image_size"] == [64, 64] and result["config"]["dataset"]["random_rotation"] == 10


def test_btad(tmp_path):
    root = make_btad_tree(tmp_path / "btad", products=("01", "02"), n_train=6, size=64)
    result = run(tmp_path, ["dataset=btad", f"dataset.root={root}", "dataset.resize=64"])
    assert set(result["metrics"]["per_category"]) == {"01", "02"} and result["image_size"] == [64, 64]
    assert result["metrics"]["per_category"]["01"]["image_ap"] is not None


def test_mtd(tmp_path):
    root = make_mtd_tree(tmp_path / "mtd", n_free=20)
    result = run(tmp_path, ["dataset=mtd", f"dataset.root={root}", "dataset.resize=64"])
    assert result["n_train"] == 16  # 80 % of MT_Free


def test_ksdd(tmp_path):
    root = make_ksdd_tree(tmp_path / "ksdd", n_folders=8, n_parts=4, shape=(96, 48))
    result = run(tmp_path, ["dataset=ksdd", f"dataset.root={root}", "dataset.pre_crop=[80,40]",
                            "dataset.resize=[64,32]"])
    assert result["image_size"] == [64, 32] and result["n_train"] >= 8


def test_folder(tmp_path):
    root = make_folder_tree(tmp_path / "parts", n_train=10, size=64)
    with pytest.warns(UserWarning) as caught:
        result = run(tmp_path, ["dataset=folder", f"dataset.train_dir={root / 'train'}",
                                f"dataset.test_normal_dir={root / 'test_normal'}",
                                f"dataset.test_anomalous_dir={root / 'test_anomalous'}",
                                f"dataset.mask_dir={root / 'masks'}", "dataset.resize=64", "dataset.crop=64"])
    about_masks = [str(w.message) for w in caught if "mask" in str(w.message)]
    assert len(about_masks) == 1 and "1 of 3 anomalous test images have no mask" in about_masks[0]
    assert result["n_test"] == 5
    assert result["metrics"]["per_category"]["folder"]["pixel_auroc"] is not None  # from the masked images
