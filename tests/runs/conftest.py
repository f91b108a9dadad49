"""A miniature MVTec AD tree and one tiny training run, shared by the run tests."""
import pytest

from gpuksvd.runs import train_run
from tests.support.configs import composed
from tests.support.data_trees import make_mvtec_tree
from tests.support.runs import TINY


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory):
    return make_mvtec_tree(tmp_path_factory.mktemp("mvtec"), categories=("bottle", "grid"), n_train=12,
                           n_test_good=3, n_per_defect=2, size=64)


@pytest.fixture(scope="module")
def trained(mvtec_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = composed(TINY + [f"dataset.root={mvtec_root}", "save_patch_errors=true"])
    return run_dir, cfg, train_run(cfg, run_dir)
