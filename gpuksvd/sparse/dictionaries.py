"""Dictionary initialisers: DCT, separable 2-D DCT, Haar, separable 2-D Haar and random atoms.

Every initialiser returns a dictionary of shape (n_atoms, n_features) whose rows (atoms) have
unit L2 norm. :func:`initial_dictionary` broadcasts one of them to all P locations.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

INITS = ("dct", "dct2d", "haar", "haar2d", "random")


def _normalize_rows(atoms: Tensor) -> Tensor:
    return atoms / atoms.norm(dim=-1, keepdim=True)


def _dct_1d(n_atoms: int, n_features: int, dtype: torch.dtype) -> Tensor:
    # DCT-II frequencies k·π/M sampled at the half-integer grid n + 1/2. With M = n_atoms ≥
    # n_features this is the overcomplete DCT frame; with M = n_features it is the orthonormal
    # DCT-II basis (of which n_atoms < n_features keeps the lowest frequencies).
    m = max(n_atoms, n_features)
    k = torch.arange(n_atoms, dtype=torch.float64)[:, None]
    n = torch.arange(n_features, dtype=torch.float64)[None, :]
    atoms = torch.cos(math.pi * k * (n + 0.5) / m)
    return _normalize_rows(atoms).to(dtype)


def dct_dictionary(n_atoms: int, n_features: int, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """1-D DCT-II atoms, for any number of features.

    Parameters
    ----------
    n_atoms : int
        Number of atoms K. ``K = C`` gives the orthonormal DCT-II basis, ``K > C`` the
        overcomplete DCT frame, ``K < C`` the K lowest frequencies.
    n_features : int
        Signal dimension C.

    Returns
    -------
    Tensor of shape (n_atoms, n_features), unit-norm rows.
    """
    _check_sizes(n_atoms, n_features)
    return _dct_1d(n_atoms, n_features, dtype)


def dct2d_dictionary(n_atoms: int, n_features: int, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """Separable 2-D DCT atoms: the Kronecker product of two 1-D DCTs.

    The signal of C = d² features is read as a d×d patch, as the reference PSDL code does
    (``conf`` option ``trim_to_square`` makes C a square). The atoms are
    ``kron(D1, D1)`` with ``D1`` the (m, d) 1-D DCT, K = m², m ≥ d.

    Returns
    -------
    Tensor of shape (n_atoms, n_features), unit-norm rows.

    Raises
    ------
    ValueError
        If ``n_features`` or ``n_atoms`` is not a perfect square.
    """
    _check_sizes(n_atoms, n_features)
    d, m = math.isqrt(n_features), math.isqrt(n_atoms)
    if d * d != n_features or m * m != n_atoms:
        raise ValueError(
            f"init='dct2d' needs square sizes (C = d², K = m²), got n_features={n_features}, "
            f"n_atoms={n_atoms}: set trim_to_square=true on the backbone so C is a square, or "
            "use init='dct'"
        )
    one_d = _dct_1d(m, d, torch.float64)
    return _normalize_rows(torch.kron(one_d, one_d)).to(dtype)


def _haar_basis(n: int) -> Tensor:
    # Generalised Haar basis for any length: the constant atom plus, for every interval of a
    # recursive halving of [0, n), a zero-mean step (+ on the left half, − on the right).
    # Nested steps are orthogonal because each is zero-mean where its parent is constant.
    atoms = [torch.ones(n, dtype=torch.float64)]
    intervals = [(0, n)]
    while intervals:
        next_level = []
        for start, stop in intervals:
            if stop - start < 2:
                continue
            mid = (start + stop) // 2
            atom = torch.zeros(n, dtype=torch.float64)
            atom[start:mid] = 1.0 / (mid - start)
            atom[mid:stop] = -1.0 / (stop - mid)
            atoms.append(atom)
            next_level += [(start, mid), (mid, stop)]
        intervals = next_level  # breadth first: coarse scales come before fine ones
    return _normalize_rows(torch.stack(atoms))


def haar_dictionary(n_atoms: int, n_features: int, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """Haar wavelet atoms, coarse to fine (orthonormal; any C, not only powers of two).

    Returns
    -------
    Tensor of shape (n_atoms, n_features), unit-norm rows; ``n_atoms ≤ n_features``.

    Raises
    ------
    ValueError
        If ``n_atoms > n_features``: the Haar basis has exactly C atoms.
    """
    _check_sizes(n_atoms, n_features)
    if n_atoms > n_features:
        raise ValueError(
            f"init='haar' gives at most n_features={n_features} atoms, got n_atoms={n_atoms}: "
            "use init='dct' or 'random' for an overcomplete dictionary"
        )
    return _haar_basis(n_features)[:n_atoms].to(dtype)


def haar2d_dictionary(n_atoms: int, n_features: int, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """Separable 2-D Haar atoms: the Kronecker product of two 1-D Haar bases.

    As sparselandtools' ``HaarDictionary`` (which the PSDL authors' code offers) builds it: the
    signal of C = d² features read as a d×d patch, atoms ``kron(H1, H1)`` with ``H1`` the first
    m atoms of the d-point Haar basis (:func:`haar_dictionary`), K = m² ≤ C.

    Returns
    -------
    Tensor of shape (n_atoms, n_features), unit-norm rows.

    Raises
    ------
    ValueError
        If ``n_features`` or ``n_atoms`` is not a perfect square, or ``n_atoms > n_features``.
    """
    _check_sizes(n_atoms, n_features)
    d, m = math.isqrt(n_features), math.isqrt(n_atoms)
    if d * d != n_features or m * m != n_atoms or m > d:
        raise ValueError(
            f"init='haar2d' needs square sizes with K ≤ C (C = d², K = m²), got n_features={n_features}, "
            f"n_atoms={n_atoms}: set trim_to_square=true on the backbone so C is a square, or use init='haar'"
        )
    one_d = _haar_basis(d)[:m]
    return _normalize_rows(torch.kron(one_d, one_d)).to(dtype)


def random_dictionary(
    n_atoms: int,
    n_features: int,
    *,
    n_locations: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Gaussian random atoms, normalised; seeded by ``generator``.

    Returns
    -------
    Tensor of shape (n_atoms, n_features), or (n_locations, n_atoms, n_features) when
    ``n_locations`` is given (a different draw per location).
    """
    _check_sizes(n_atoms, n_features)
    shape = (n_atoms, n_features) if n_locations is None else (n_locations, n_atoms, n_features)
    atoms = torch.randn(shape, generator=generator, dtype=torch.float64)
    return _normalize_rows(atoms).to(dtype)


def initial_dictionary(
    init: str | Tensor,
    n_locations: int,
    n_atoms: int,
    n_features: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """The starting dictionary of every location.

    Parameters
    ----------
    init : {"dct", "dct2d", "haar", "haar2d", "random"} or Tensor
        A name, or atoms of shape (n_atoms, n_features) shared by all locations or
        (n_locations, n_atoms, n_features); rows are normalised.

    Returns
    -------
    Tensor of shape (n_locations, n_atoms, n_features), a fresh copy.
    """
    if isinstance(init, Tensor):
        atoms = init.detach().to(dtype=torch.float64)
        if atoms.shape not in ((n_atoms, n_features), (n_locations, n_atoms, n_features)):
            raise ValueError(
                f"init tensor has shape {tuple(init.shape)}, expected ({n_atoms}, {n_features}) "
                f"or ({n_locations}, {n_atoms}, {n_features}) (n_atoms, n_features)"
            )
        norms = atoms.norm(dim=-1)
        if bool((norms == 0).any()) or not bool(torch.isfinite(atoms).all()):
            raise ValueError("init tensor has an all-zero or non-finite atom: every row must be a usable atom")
        atoms = atoms / norms[..., None]
    elif init == "random":
        atoms = random_dictionary(n_atoms, n_features, n_locations=n_locations, generator=generator,
                                  dtype=torch.float64)
    elif init in _NAMED:
        atoms = _NAMED[init](n_atoms, n_features, dtype=torch.float64)
    else:
        raise ValueError(f"unknown init {init!r}: expected one of {INITS} or a tensor of atoms")
    atoms = atoms.to(device=device, dtype=dtype)
    return atoms.expand(n_locations, n_atoms, n_features).clone()


_NAMED = {"dct": dct_dictionary, "dct2d": dct2d_dictionary, "haar": haar_dictionary, "haar2d": haar2d_dictionary}


def _check_sizes(n_atoms: int, n_features: int) -> None:
    if n_atoms < 1 or n_features < 1:
        raise ValueError(f"n_atoms and n_features must be positive, got {n_atoms} and {n_features}")
