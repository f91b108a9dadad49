"""Dictionary initialisers: unit norms, orthogonality where promised, shapes and errors."""
import math

import pytest
import torch
from scipy.fft import dct

from gpuksvd import dct2d_dictionary, dct_dictionary, haar_dictionary, initial_dictionary, random_dictionary


@pytest.mark.parametrize("n_features", [7, 16, 200])
def test_square_dct_is_the_orthonormal_dct_ii(n_features):
    atoms = dct_dictionary(n_features, n_features, dtype=torch.float64)
    eye = torch.eye(n_features, dtype=torch.float64)
    assert torch.allclose(atoms @ atoms.T, eye, atol=1e-10)
    reference = torch.from_numpy(dct(eye.numpy(), type=2, norm="ortho", axis=0))  # rows = DCT-II basis
    assert torch.allclose(atoms, reference, atol=1e-10)


def test_overcomplete_dct_has_unit_atoms():
    atoms = dct_dictionary(50, 20, dtype=torch.float64)
    assert atoms.shape == (50, 20)
    assert torch.allclose(atoms.norm(dim=1), torch.ones(50, dtype=torch.float64))
    assert torch.linalg.matrix_rank(atoms) == 20


def test_dct2d_is_kronecker_of_1d():
    atoms = dct2d_dictionary(16, 16, dtype=torch.float64)
    one_d = dct_dictionary(4, 4, dtype=torch.float64)
    assert torch.allclose(atoms, torch.kron(one_d, one_d), atol=1e-12)
    assert torch.allclose(atoms @ atoms.T, torch.eye(16, dtype=torch.float64), atol=1e-10)
    with pytest.raises(ValueError, match="trim_to_square"):
        dct2d_dictionary(200, 200)


@pytest.mark.parametrize("n_features", [8, 13, 200])
def test_haar_is_orthonormal_for_any_length(n_features):
    atoms = haar_dictionary(n_features, n_features, dtype=torch.float64)
    assert torch.allclose(atoms @ atoms.T, torch.eye(n_features, dtype=torch.float64), atol=1e-10)
    assert math.isclose(float(atoms[0].std()), 0.0, abs_tol=1e-12)  # coarse first: the constant atom
    with pytest.raises(ValueError, match="at most"):
        haar_dictionary(n_features + 1, n_features)


def test_random_is_seeded():
    a = random_dictionary(10, 5, generator=torch.Generator().manual_seed(0))
    b = random_dictionary(10, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and torch.allclose(a.norm(dim=1), torch.ones(10))
    per_location = initial_dictionary("random", 3, 10, 5, generator=torch.Generator().manual_seed(0))
    assert per_location.shape == (3, 10, 5) and not torch.equal(per_location[0], per_location[1])


def test_initial_dictionary_copies_and_normalises():
    init = torch.randn(6, 4)
    result = initial_dictionary(init, 2, 6, 4)
    assert result.shape == (2, 6, 4)
    assert torch.allclose(result.norm(dim=-1), torch.ones(2, 6))
    result[0, 0] = 0
    assert bool((result[1, 0] != 0).any())  # locations own their atoms
    with pytest.raises(ValueError, match="all-zero"):
        initial_dictionary(torch.zeros(6, 4), 2, 6, 4)


def test_haar2d_is_kronecker_of_1d_and_orthonormal():
    from gpuksvd.sparse import haar2d_dictionary

    atoms = haar2d_dictionary(64, 64, dtype=torch.float64)
    one_d = haar_dictionary(8, 8, dtype=torch.float64)
    assert torch.allclose(atoms, torch.kron(one_d, one_d))
    assert torch.allclose(atoms @ atoms.T, torch.eye(64, dtype=torch.float64), atol=1e-12)
    assert haar2d_dictionary(36, 121).shape == (36, 121)  # 6² atoms of the 11-point basis
    with pytest.raises(ValueError, match="haar2d.*trim_to_square"):
        haar2d_dictionary(64, 60)
