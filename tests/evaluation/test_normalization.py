"""Per-category score normalisation: none, the paper's min-max, the leak-free training rule."""
import math

import pytest
import torch

from gpuksvd.evaluation.normalization import normalize_scores


def test_minmax_normalisation_per_category():
    scores = torch.tensor([1.0, 3.0, 10.0, 20.0, 2.0, 5.0, 5.0])
    categories = ["a", "a", "b", "b", "a", "c", "c"]
    out = normalize_scores(scores, categories, method="minmax")
    assert torch.allclose(out, torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5, 0.0, 0.0]))


def test_train_normalisation_uses_training_statistics_only():
    scores = torch.tensor([4.0, 100.0, 0.0])
    categories = ["a", "b", "a"]
    train = torch.tensor([1.0, 3.0, 10.0, 30.0, 20.0, 999.0])
    train_categories = ["a", "a", "b", "b", "b", "unused"]
    out = normalize_scores(scores, categories, method="train",
                                 train_scores=train, train_categories=train_categories)
    std_a, std_b = math.sqrt(2.0), 10.0  # n − 1 standard deviations of (1, 3) and (10, 30, 20)
    assert torch.allclose(out, torch.tensor([(4 - 2) / std_a, (100 - 20) / std_b, (0 - 2) / std_a]))
    with pytest.raises(ValueError, match=r"no training scores for categories \['c'\]"):
        normalize_scores(torch.rand(2), ["a", "c"], method="train",
                               train_scores=train, train_categories=train_categories)
    with pytest.raises(ValueError, match="needs train_scores"):
        normalize_scores(scores, categories, method="train")
    with pytest.raises(ValueError, match="fewer than 2 values or zero spread"):
        normalize_scores(scores, categories, method="train",
                               train_scores=torch.tensor([1.0, 1.0, 2.0]),
                               train_categories=["a", "a", "b"])


def test_none_keeps_the_scores_and_unknown_names_are_refused():
    scores = torch.tensor([3.0, 1.0])
    assert normalize_scores(scores, ["a", "b"], method="none") is scores
    with pytest.raises(ValueError, match="normalize must be one of none, minmax, train, got 'foo'"):
        normalize_scores(scores, ["a", "b"], method="foo")
