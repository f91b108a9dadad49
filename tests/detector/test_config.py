"""PSDLConfig: the paper's defaults, early refusals with the fix in the message."""
import warnings

import pytest

from gpuksvd.detector import PSDLConfig


def test_defaults_are_the_papers():
    config = PSDLConfig()
    assert (config.n_atoms, config.sparsity, config.n_iter, config.init) == (None, 0.25, 20, "dct")
    assert config.atoms_for(200) == 200 and config.nonzero_for(200, 200) == 50
    assert PSDLConfig(n_atoms=48).atoms_for(200) == 48
    assert PSDLConfig(sparsity=0.001).nonzero_for(16, 16) == 1  # at least one non-zero


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(init="wavelets"), "unknown init"),
        (dict(atom_update="svd"), "unknown atom_update"),
        (dict(n_iter=-2), "n_iter must be a non-negative"),
        (dict(n_iter=2.5), "n_iter must be a non-negative"),
        (dict(sparsity=0.0), "sparsity must be a fraction"),
        (dict(stats_codes="both"), "stats_codes"),
        (dict(n_atoms=0), "n_atoms must be a positive integer"),
        (dict(sigma=-1.0), "sigma"),
        (dict(kernel="cuda"), "unknown kernel 'cuda'"),
        (dict(dead_atoms="drop"), "dead_atoms"),
    ],
)
def test_bad_values_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PSDLConfig(**kwargs)


def test_more_nonzeros_than_channels_warns_and_names_the_fix():
    with pytest.warns(UserWarning, match=r"asks for 50 non-zeros.*32 channels.*ksvd.sparsity"):
        PSDLConfig(n_atoms=200).check_features(32, "layer1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PSDLConfig(n_atoms=128).check_features(32, "layer1")  # 32 non-zeros: allowed


def test_feature_checks_name_the_layer_and_the_fix():
    with pytest.raises(ValueError, match="init=haar gives at most 128 atoms on 'layer2'"):
        PSDLConfig(init="haar", n_atoms=200).check_features(128, "layer2")
    with pytest.raises(ValueError, match="init=dct2d needs square.*trim_to_square"):
        PSDLConfig(init="dct2d").check_features(128, "layer2")
    PSDLConfig(init="dct2d").check_features(121, "layer2")  # 11² channels, 11² atoms


def test_training_size_check_says_how_many():
    with pytest.raises(ValueError, match=r"need at least 64 training images.*'layer2' \(64 channels\).*got 24"):
        PSDLConfig().check_training_size(24, 64, "layer2")
    PSDLConfig().check_training_size(64, 64, "layer2")
