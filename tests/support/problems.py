"""Sparse-coding test problems shared by the engine's tests, drawn in float64 from a seed."""
import torch


def random_problem(n_locations, n_signals, n_features, n_atoms, dtype=torch.float64, seed=0, device="cpu"):
    """Gaussian dictionaries with unit-norm atoms (P, K, C) and Gaussian signals (P, N, C), drawn in
    that order from one generator on ``device`` and cast to ``dtype``."""
    gen = torch.Generator(device=device).manual_seed(seed)
    dictionary = torch.randn(n_locations, n_atoms, n_features, generator=gen, device=device, dtype=torch.float64)
    dictionary /= dictionary.norm(dim=-1, keepdim=True)
    signals = torch.randn(n_locations, n_signals, n_features, generator=gen, device=device, dtype=torch.float64)
    return dictionary.to(dtype), signals.to(dtype)


def planted_problem(n_locations=3, n_signals=1500, n_features=16, n_atoms=24, n_nonzero=3, noise=0.01, seed=0,
                    generator=None):
    """A known dictionary (P, K, C) and signals (P, N, C) from its sparse model: ``n_nonzero``
    atoms per signal with coefficients of magnitude ≥ 0.5, plus ``noise`` Gaussian noise. Draws
    from ``generator`` when given (its state moves on), else from ``seed``."""
    gen = torch.Generator().manual_seed(seed) if generator is None else generator
    true = torch.randn(n_locations, n_atoms, n_features, generator=gen, dtype=torch.float64)
    true /= true.norm(dim=-1, keepdim=True)
    support = torch.rand(n_locations, n_signals, n_atoms, generator=gen).argsort(-1)[..., :n_nonzero]
    values = torch.randn(n_locations, n_signals, n_nonzero, generator=gen, dtype=torch.float64)
    values = values.sign() * (0.5 + values.abs())
    codes = torch.zeros(n_locations, n_signals, n_atoms, dtype=torch.float64).scatter_(-1, support, values)
    signals = codes @ true + noise * torch.randn(n_locations, n_signals, n_features, generator=gen, dtype=torch.float64)
    return true, signals
