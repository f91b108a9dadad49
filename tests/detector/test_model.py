"""The PSDL detector on synthetic features: fitted buffers, progress callback, state dicts,
planted anomalies, early refusals, and the CPU against CUDA."""
import math

import pytest
import torch

from gpuksvd.data import Preprocess
from gpuksvd.detector import PSDL, PSDLConfig
from gpuksvd.features import build_extractor
from tests.support.devices import DEVICES

GEOMETRY = Preprocess(resize=64, crop=None)  # ResNet-18 layer2: 128 channels on an 8x8 map


@pytest.fixture(scope="module")
def extractor():
    return build_extractor("resnet18", ["layer2"], weights="random")


def fitted(extractor, n_train=40, n_iter=2, seed=3, **config):
    model = PSDL(extractor, PSDLConfig(n_atoms=16, n_iter=n_iter, **config), GEOMETRY)
    gen = torch.Generator().manual_seed(seed)
    events = []
    categories = ["a"] * (n_train // 2) + ["b"] * (n_train - n_train // 2)
    model.fit_features([torch.randn(n_train, 128, 8, 8, generator=gen)], categories,
                       callback=lambda *event: events.append(event))
    return model, events


def test_fit_fills_the_buffers_and_reports_each_iteration(extractor):
    model, events = fitted(extractor)
    location_model = model.sets[0]
    assert location_model.dictionaries_.shape == (64, 16, 128)
    assert torch.allclose(location_model.dictionaries_.norm(dim=-1), torch.ones(64, 16), atol=1e-5)
    assert location_model.train_error_.shape == (3, 64)
    assert bool((location_model.train_error_[-1] < location_model.train_error_[0]).all())
    assert model.train_scores_.shape == (40,) and bool(torch.isfinite(model.train_scores_).all())
    assert model.train_categories == ["a"] * 20 + ["b"] * 20
    assert [(name, iteration) for name, iteration, _ in events] == [("layer2", 0), ("layer2", 1), ("layer2", 2)]
    assert math.isnan(events[0][2]) and all(0 < error < 1 for _, iteration, error in events if iteration)


def test_state_dict_restores_the_model_including_the_training_scores(extractor):
    model, _ = fitted(extractor)
    restored = PSDL(extractor, PSDLConfig(n_atoms=16, n_iter=2), GEOMETRY)
    assert restored.train_scores_.shape == (0,)
    restored.load_state_dict(model.state_dict())
    assert torch.equal(restored.train_scores_, model.train_scores_)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    assert torch.equal(restored.anomaly_maps(images), model.anomaly_maps(images))


def test_a_planted_anomaly_scores_higher_where_it_is():
    # Features are the backbone's output, so plant the anomaly in feature space: the normal
    # signals live in a 4-dimensional subspace per location, the anomaly leaves it at one cell.
    extractor = build_extractor("resnet18", ["layer2"], weights="random")
    model = PSDL(extractor, PSDLConfig(n_atoms=16, n_iter=3, sigma=0.0), GEOMETRY)
    gen = torch.Generator().manual_seed(5)
    basis = torch.linalg.qr(torch.randn(128, 4, generator=gen, dtype=torch.float64))[0].float()
    train = torch.einsum("ck,nkhw->nchw", basis, torch.randn(60, 4, 8, 8, generator=gen))
    model.fit_features([train])
    test = torch.einsum("ck,nkhw->nchw", basis, torch.randn(2, 4, 8, 8, generator=gen))
    test[1, :, 3, 5] += 3 * torch.randn(128, generator=gen)
    signals = test.flatten(2).permute(2, 0, 1).contiguous()  # (P, 2, C)
    scores, _ = model.sets[0].location_scores(signals, model.n_nonzero(0))  # (P, 2)
    anomalous_cell = 3 * 8 + 5
    assert int(scores[:, 1].argmax()) == anomalous_cell
    assert float(scores[anomalous_cell, 1]) > 3 * float(scores[:, 0].max())


def test_impossible_settings_fail_when_the_model_is_built(extractor):
    # PSDL is built before any feature is extracted, so these fail in seconds, not after a fit.
    for config, message in ((dict(init="haar", n_atoms=200), "init=haar gives at most 128"),
                            (dict(init="dct2d"), "init=dct2d needs square")):
        with pytest.raises(ValueError, match=message):
            PSDL(extractor, PSDLConfig(**config), GEOMETRY)
    with pytest.raises(TypeError, match="preprocess must be a gpuksvd.data.Preprocess"):
        PSDL(extractor, PSDLConfig(), (64, 64))
    model = PSDL(extractor, PSDLConfig(n_atoms=16), GEOMETRY)
    with pytest.raises(ValueError, match="need at least 16 training images.*got 10"):
        model.check_training_size(10)
    with pytest.raises(ValueError, match=r"images are \(32, 32\) but the model was built for \(64, 64\)"):
        model.anomaly_maps(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("device", DEVICES)
def test_detector_scores_agree_between_cpu_and_each_device(extractor, device):
    model, _ = fitted(extractor)
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    cpu_maps = model.anomaly_maps(images)
    other_maps = model.to(device).anomaly_maps(images.to(device)).cpu()
    assert torch.allclose(other_maps, cpu_maps, rtol=1e-3, atol=1e-3)


def test_the_training_mse_per_location_is_the_mean_squared_residual(extractor):
    from gpuksvd.sparse import batch_omp, initial_dictionary

    model, _ = fitted(extractor, n_iter=0)  # the fixed DCT dictionary: its codes are plain OMP codes
    gen = torch.Generator().manual_seed(3)
    signals = torch.randn(40, 128, 8, 8, generator=gen).flatten(2).permute(2, 0, 1).contiguous()
    dictionary = initial_dictionary("dct", 64, 16, 128)
    codes = batch_omp(dictionary, signals, model.n_nonzero(0))
    expected = (signals - codes @ dictionary).double().square().mean((1, 2))
    torch.testing.assert_close(model.sets[0].train_mse_[0].double(), expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("dead_atoms", ["keep", "replace"])
def test_the_authors_mode_trims_to_a_square_and_keeps_dead_atoms(dead_atoms):
    """ksvd=paper (the authors' code): the first d² channels, d² atoms from the 2-D DCT,
    round(d²/4) non-zeros, and an atom no signal uses left as it was."""
    from gpuksvd.sparse import initial_dictionary

    extractor = build_extractor("resnet18", ["layer2"], weights="random", trim_to_square=True)
    model = PSDL(extractor, PSDLConfig(init="dct2d", dead_atoms=dead_atoms, n_iter=1), GEOMETRY)
    assert model.feature_shapes[0] == (121, 8, 8)  # 128 channels → the first 11² = 121
    assert model.sets[0].dictionaries_.shape == (64, 121, 121) and model.n_nonzero(0) == round(121 / 4) == 30
    # Signals in the span of the first 30 atoms of the (orthonormal) 2-D DCT: OMP never picks
    # the other 91, which are dead in the first iteration.
    start = initial_dictionary("dct2d", 64, 121, 121)
    gen = torch.Generator().manual_seed(6)
    codes = torch.zeros(64, 150, 121)
    codes[..., :30] = torch.randn(64, 150, 30, generator=gen)
    features = (codes @ start).permute(1, 2, 0).reshape(150, 121, 8, 8)
    model.fit_features([features])
    fitted = model.sets[0].dictionaries_
    unchanged = torch.isclose(fitted[:, 30:], start[:, 30:], atol=1e-6).all(-1)
    if dead_atoms == "keep":
        assert bool(unchanged.all())
    else:
        assert float(unchanged.float().mean()) < 0.1  # replaced by (worst-represented) training signals


@pytest.mark.parametrize("init", ["random", "dct"])
def test_fitting_shares_of_the_locations_gives_the_whole_fit(init):
    # What a run over several processes relies on: each fits a block of the locations, starting
    # from its slice of the initial atoms drawn for all of them, and gets what one fit of all
    # the locations gets, whatever the blocks (uneven ones included).
    from gpuksvd.detector import LocationModel

    config = PSDLConfig(n_atoms=16, n_iter=3, init=init, seed=7)
    signals = torch.randn(11, 40, 24, generator=torch.Generator().manual_seed(8))
    whole = LocationModel(11, 16, 24, config.n_iter)
    whole_scores = whole.fit(signals, config)
    assert torch.equal(whole.initial_dictionaries(config)[3:7], whole.initial_dictionaries(config, slice(3, 7)))
    for blocks in ([slice(0, 6), slice(6, 11)], [slice(0, 4), slice(4, 8), slice(8, 11)]):
        parts = []
        for block in blocks:
            part = LocationModel(block.stop - block.start, 16, 24, config.n_iter)
            scores = part.fit(signals[block], config, initial=whole.initial_dictionaries(config, block))
            parts.append((part, scores))
        for name, dim in LocationModel.location_dims.items():
            joined = torch.cat([getattr(part, name) for part, _ in parts], dim=dim)
            error = (joined - getattr(whole, name)).abs().max().item()
            assert torch.allclose(joined, getattr(whole, name), rtol=1e-4, atol=1e-5), (name, error)
        joined_scores = torch.cat([scores for _, scores in parts])
        assert torch.allclose(joined_scores, whole_scores, rtol=1e-4, atol=1e-4)


def test_image_scores_of_location_scores_are_the_training_scores(extractor):
    # The training images scored as test images (fresh codes), location by location, then
    # turned into image scores: the training scores the fit stored.
    model, _ = fitted(extractor)
    features = torch.randn(40, 128, 8, 8, generator=torch.Generator().manual_seed(3))  # fitted()'s
    scores, _ = model.sets[0].location_scores(features.flatten(2).permute(2, 0, 1).contiguous(), model.n_nonzero(0))
    by_image = model.image_scores_of([scores.T.reshape(40, 8, 8)])
    assert torch.allclose(by_image, model.train_scores_, rtol=1e-4), (by_image - model.train_scores_).abs().max()
    assert model.image_scores_of([torch.zeros(0, 8, 8)]).shape == (0,)


def test_out_of_fold_scores_come_from_models_that_never_saw_the_image(extractor):
    # Each training image is scored by a model fitted on the other folds only; the same as
    # fitting that model by hand and scoring the held-out features as test features. The
    # model's own fit is left alone, and held-out scores run higher than in-sample ones.
    from gpuksvd.detector.model import to_signals
    from gpuksvd.evaluation import crossfit_folds

    model, _ = fitted(extractor, n_train=48)
    features = torch.randn(48, 128, 8, 8, generator=torch.Generator().manual_seed(3))  # fitted()'s
    folds = crossfit_folds(model.train_categories, 3, seed=1)
    before = model.sets[0].dictionaries_.clone()
    scores = model.out_of_fold_image_scores([features], folds)
    assert torch.equal(model.sets[0].dictionaries_, before)
    expected = torch.empty(48)
    for fold in range(3):
        held_out = folds == fold
        by_hand = PSDL(extractor, model.config, GEOMETRY)
        by_hand.fit_features([features[~held_out]])
        location_scores, _ = by_hand.sets[0].location_scores(to_signals(features[held_out]), by_hand.n_nonzero(0))
        expected[held_out] = by_hand.image_scores_of([location_scores.T.reshape(-1, 8, 8)])
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-4)
    assert float(scores.mean()) > float(model.train_scores_.mean())


def test_a_crossfit_too_small_for_the_atoms_is_refused_before_extraction(extractor):
    model = PSDL(extractor, PSDLConfig(n_atoms=16), GEOMETRY)
    model.check_training_size(24, fold_fit=16)
    with pytest.raises(ValueError, match=r"threshold.method=crossfit fits 16-atom dictionaries on 'layer2' without "
                                         r"each fold, on 12 of the 24 training images.*threshold.folds=5"):
        model.check_training_size(24, fold_fit=12)
    with pytest.raises(ValueError, match=r"crossfit cannot work on 'layer2'.* at most 15 of the 16.*quantile"):
        model.check_training_size(16, fold_fit=14)  # as many images as atoms: no fold count helps
