"""Argument checks of the engine: each mistake raises a ValueError that names the bad value and
the fix, and valid arguments pass."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gpuksvd.sparse.checks import (
    ATOM_UPDATES,
    DEAD_ATOMS,
    KERNELS,
    check_atom_update,
    check_codes,
    check_dead_atoms,
    check_dictionary,
    check_enough_signals,
    check_kernel,
    check_n_atoms,
    check_n_iter,
    check_n_nonzero,
    check_signal_shape,
    check_signals,
    is_integer,
)

P, N, K, C = 2, 6, 4, 3


def signals(dtype=torch.float64) -> torch.Tensor:
    return torch.randn(P, N, C, generator=torch.Generator().manual_seed(0), dtype=dtype)


def test_is_integer_takes_python_and_numpy_integers_but_not_bools_or_floats():
    assert is_integer(3) and is_integer(np.int64(3)) and is_integer(np.uint8(0))
    assert not is_integer(True) and not is_integer(3.0) and not is_integer("3") and not is_integer(None)


def test_signal_shape_must_be_three_dimensional():
    check_signal_shape(signals())
    with pytest.raises(ValueError, match=r"shape \(P, N, C\).*got Tensor of shape \(6, 3\)"):
        check_signal_shape(signals()[0])
    with pytest.raises(ValueError, match=r"got ndarray of shape \(2, 6, 3\)"):
        check_signal_shape(signals().numpy())
    with pytest.raises(ValueError, match=r"got list of shape \(\)"):
        check_signal_shape([[1.0]])


@pytest.mark.parametrize("n_nonzero", [1, 3, np.int32(2)])
def test_n_nonzero_in_range_passes(n_nonzero):
    check_n_nonzero(n_nonzero, n_atoms=5, n_features=3)


@pytest.mark.parametrize("n_nonzero", [0, 4, -1, 2.0, True, "2"])
def test_n_nonzero_out_of_range_names_the_bound_and_the_value(n_nonzero):
    # the bound is the smaller of the atom and feature counts: 3 here, not 5
    with pytest.raises(ValueError, match=r"\[1, min\(n_atoms, n_features\)\] = \[1, 3\]") as info:
        check_n_nonzero(n_nonzero, n_atoms=5, n_features=3)
    assert str(info.value).endswith(f"got {n_nonzero!r}")


def test_n_iter_is_a_non_negative_integer():
    check_n_iter(0)
    check_n_iter(np.int64(7))
    for bad in (-1, 1.5, True, None):
        with pytest.raises(ValueError, match=r"non-negative integer \(0: fixed initial dictionary\)") as info:
            check_n_iter(bad)
        assert str(info.value).endswith(f"got {bad!r}")


def test_n_atoms_is_a_positive_integer():
    check_n_atoms(1)
    for bad in (0, -3, 2.0, False):
        with pytest.raises(ValueError, match=rf"n_atoms must be a positive integer, got {bad!r}$"):
            check_n_atoms(bad)


@pytest.mark.parametrize(("check", "choices", "bad"), [
    (check_atom_update, ATOM_UPDATES, "svd"),
    (check_kernel, KERNELS, "cuda"),
    (check_dead_atoms, DEAD_ATOMS, "drop"),
])
def test_choices_accept_each_option_and_list_them_on_a_mistake(check, choices, bad):
    for choice in choices:
        check(choice)
    with pytest.raises(ValueError) as info:
        check(bad)
    message = str(info.value)
    assert message.startswith(f"unknown {check.__name__.removeprefix('check_')} {bad!r}: choose"), message
    assert all(choice in message.partition(": choose")[2] for choice in choices), message


def test_the_choice_lists_are_what_the_engine_documents():
    assert ATOM_UPDATES == ("approximate", "exact")
    assert KERNELS == ("auto", "torch", "native", "triton")
    assert DEAD_ATOMS == ("replace", "keep")


def test_enough_signals_says_how_many_are_needed_and_how_to_fix():
    check_enough_signals(n_signals=8, n_atoms=8)
    with pytest.raises(ValueError) as info:
        check_enough_signals(n_signals=150, n_atoms=200, where=" on 'block10' (112 channels)")
    message = str(info.value)
    assert message.startswith("need at least 200 training images for 200-atom dictionaries on 'block10' (112 channels)")
    assert "N=150" in message and "got 150 training images" in message
    assert "Add training images (at least 200)" in message and "use fewer atoms" in message


def test_signals_are_checked_for_shape_dtype_count_and_finiteness():
    check_signals(signals(torch.float32), n_atoms=N)
    with pytest.raises(ValueError, match=r"shape \(P, N, C\)"):
        check_signals(signals()[0], n_atoms=2)
    with pytest.raises(ValueError, match=r"float32 or float64, got torch.int64: convert with \.float\(\)"):
        check_signals(torch.ones(P, N, C, dtype=torch.int64), n_atoms=2)
    with pytest.raises(ValueError, match="n_atoms must be a positive integer, got 0"):
        check_signals(signals(), n_atoms=0)
    with pytest.raises(ValueError, match=rf"need at least {N + 1} training images"):
        check_signals(signals(), n_atoms=N + 1)
    for bad in (float("nan"), float("inf")):
        broken = signals()
        broken[1, 2, 0] = bad
        with pytest.raises(ValueError, match="NaN or infinite values"):
            check_signals(broken, n_atoms=2)


def test_dictionary_of_one_location_is_shared_by_all():
    shared = torch.randn(K, C, dtype=torch.float64)
    dictionary = check_dictionary(shared, signals())
    assert dictionary.shape == (P, K, C)
    assert torch.equal(dictionary[0], shared) and torch.equal(dictionary[1], shared)
    per_location = torch.randn(P, K, C, dtype=torch.float64)
    assert check_dictionary(per_location, signals()) is per_location


def test_dictionary_mistakes_name_the_shapes_dtypes_and_fix():
    with pytest.raises(ValueError, match=r"\(P, K, C\) or \(K, C\), got Tensor of shape \(3,\)"):
        check_dictionary(torch.randn(3, dtype=torch.float64), signals())
    with pytest.raises(ValueError, match=r"got ndarray of shape \(4, 3\)"):
        check_dictionary(np.zeros((K, C)), signals())
    with pytest.raises(ValueError, match=r"share one floating dtype, got torch.float64 and torch.float32: convert with"):
        check_dictionary(torch.randn(K, C), signals())
    with pytest.raises(ValueError, match=r"share one floating dtype, got torch.int64 and torch.int64"):
        check_dictionary(torch.ones(K, C, dtype=torch.int64), torch.ones(P, N, C, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"dictionary of shape \(3, 4, 3\) \(P, K, C\) does not match signals "
                                         r"of shape \(2, 6, 3\) \(P, N, C\): P and C must agree"):
        check_dictionary(torch.randn(P + 1, K, C, dtype=torch.float64), signals())
    with pytest.raises(ValueError, match=r"dictionary of shape \(2, 4, 5\).*P and C must agree"):
        check_dictionary(torch.randn(K, C + 2, dtype=torch.float64), signals())
    with pytest.raises(ValueError, match=r"shape \(P, N, C\)"):
        check_dictionary(torch.randn(K, C, dtype=torch.float64), signals()[0])


def test_dictionary_on_another_device_is_refused():
    # The meta device stands in for a GPU: no test machine needs one to reach this branch.
    with pytest.raises(ValueError, match="signals are on cpu but the dictionary is on meta"):
        check_dictionary(torch.empty(K, C, dtype=torch.float64, device="meta"), signals())


def test_codes_must_match_signals_and_atoms():
    check_codes(torch.zeros(P, N, K, dtype=torch.float64), signals(), n_atoms=K)
    with pytest.raises(ValueError, match=r"codes must have shape \(2, 6, 4\) \(P, N, K\), got \(2, 6, 5\)"):
        check_codes(torch.zeros(P, N, K + 1, dtype=torch.float64), signals(), n_atoms=K)
    with pytest.raises(ValueError, match=r"got \(\)$"):
        check_codes([0.0], signals(), n_atoms=K)
    with pytest.raises(ValueError, match="codes must be torch.float64 on cpu like the signals, got torch.float32 on cpu"):
        check_codes(torch.zeros(P, N, K), signals(), n_atoms=K)
    with pytest.raises(ValueError, match="got torch.float64 on meta"):
        check_codes(torch.zeros(P, N, K, dtype=torch.float64, device="meta"), signals(), n_atoms=K)
