"""Both stores of Batch-OMP's inverse Cholesky factor against explicit triangular products."""
import pytest
import torch

from gpuksvd.sparse.inverse_factor import FACTOR_LAYOUTS, MatrixFactor, SignalsLastFactor, inverse_factor
from tests.support.devices import DEVICES


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", [MatrixFactor, SignalsLastFactor])
def test_products_and_rows_match_the_explicit_lower_triangle(kind, device):
    # Grow a 13-step factor (past MatrixFactor's first capacity of 8) row by row and compare
    # every product with the dense lower-triangular matrix it stands for.
    gen = torch.Generator().manual_seed(0)
    n_locations, n_signals, n_steps = 2, 5, 13
    like = torch.empty(n_locations, n_signals, 3, dtype=torch.float64, device=device)
    factor = kind(n_locations, n_signals, n_steps, like)
    dense = torch.zeros(n_locations, n_signals, n_steps, n_steps, dtype=torch.float64)
    for k in range(n_steps):
        diagonal = torch.rand(n_locations, n_signals, generator=gen, dtype=torch.float64) + 0.5
        if k == 0:
            factor.set_row(0, diagonal.to(device))
        else:
            off = torch.randn(n_locations, k, n_signals, generator=gen, dtype=torch.float64)
            scale = torch.randn(n_locations, n_signals, generator=gen, dtype=torch.float64)
            factor.set_row(k, diagonal.to(device), off.to(device), scale.to(device))
            dense[:, :, k, :k] = (off * scale[:, None]).permute(0, 2, 1)
        dense[:, :, k, k] = diagonal
        assert factor.size == k + 1
        rows = dense[:, :, k, : k + 1].permute(0, 2, 1)  # (P, k + 1, N)
        torch.testing.assert_close(factor.row(k).cpu(), rows, rtol=0, atol=0)
        g = torch.randn(n_locations, k + 1, n_signals, generator=gen, dtype=torch.float64)
        block = dense[:, :, : k + 1, : k + 1]
        lower = (block @ g.permute(0, 2, 1)[..., None])[..., 0].permute(0, 2, 1)
        upper = (block.mT @ g.permute(0, 2, 1)[..., None])[..., 0].permute(0, 2, 1)
        torch.testing.assert_close(factor.lower_product(k + 1, g.to(device)).cpu(), lower, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(factor.upper_product(k + 1, g.to(device)).cpu(), upper, rtol=1e-12, atol=1e-12)


def test_auto_layout_follows_the_device_and_names_are_checked():
    like = torch.empty(1, 4, 2)
    assert isinstance(inverse_factor(1, 4, 3, like), SignalsLastFactor)
    assert isinstance(inverse_factor(1, 4, 3, like, "matrices"), MatrixFactor)
    assert FACTOR_LAYOUTS == ("auto", "matrices", "signals-last")
