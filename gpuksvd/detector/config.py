"""The detector's dictionary-learning and scoring settings (``conf/ksvd/*.yaml``)."""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

from ..sparse import (INITS, check_atom_update, check_dead_atoms, check_enough_signals, check_kernel,
                      check_n_iter)

STATS_CODES = ("ksvd", "omp")


@dataclass
class PSDLConfig:
    """Dictionary learning and scoring settings (the paper's defaults).

    Attributes
    ----------
    n_atoms : int or None
        Atoms per location; None gives a square dictionary (K = C).
    sparsity : float
        Non-zeros per code as a fraction of the atoms (paper: 1/4), rounded, at least 1.
    n_iter : int
        K-SVD iterations (0: fixed initial dictionary, OMP only).
    init : str
        ``"dct"``, ``"dct2d"``, ``"haar"``, ``"haar2d"`` or ``"random"``.
    atom_update : str
        ``"approximate"`` (reference code) or ``"exact"``.
    dead_atoms : str
        An atom no training signal uses at a location: ``"replace"`` it with the
        worst-represented signal (gpuksvd), or ``"keep"`` it unchanged (the authors' code).
    stats_codes : str
        Codes the Gaussian is fitted on: ``"ksvd"`` (those after the last atom update, as the
        reference code) or ``"omp"`` (fresh OMP codes, as at test time).
    covariance_reg : float
        λ in Σ + λI.
    sigma : float
        Gaussian blur of the anomaly maps, in pixels.
    seed : int
        Seeds ``init="random"``.
    max_memory : int or None
        Working-memory budget of K-SVD / OMP in bytes (None: automatic).
    kernel : str
        Batch-OMP / atom-update implementation (:func:`gpuksvd.sparse.batch_omp`): ``"auto"``
        (the native C kernel on the CPU where it builds, the torch path elsewhere), ``"torch"``,
        ``"native"`` (CPU) or ``"triton"`` (the fused CUDA kernel, opt-in until measured faster).
        It changes speed, not the model, up to float rounding.
    """

    n_atoms: int | None = None
    sparsity: float = 0.25
    n_iter: int = 20
    init: str = "dct"
    atom_update: str = "approximate"
    dead_atoms: str = "replace"
    stats_codes: str = "ksvd"
    covariance_reg: float = 0.01
    sigma: float = 4.0
    seed: int = 0
    max_memory: int | None = None
    kernel: str = "auto"

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}: choose one of {', '.join(INITS)}")
        check_atom_update(self.atom_update)
        check_n_iter(self.n_iter)
        if self.covariance_reg < 0 or self.sigma < 0:
            raise ValueError(f"covariance_reg and sigma must be ≥ 0, got {self.covariance_reg} and {self.sigma}")
        if not 0 < self.sparsity <= 1:
            raise ValueError(f"sparsity must be a fraction of the atoms in (0, 1], got {self.sparsity}")
        check_dead_atoms(self.dead_atoms)
        check_kernel(self.kernel)
        if self.stats_codes not in STATS_CODES:
            raise ValueError(f"stats_codes must be one of {STATS_CODES}, got {self.stats_codes!r}")
        if self.n_atoms is not None and (not isinstance(self.n_atoms, numbers.Integral) or self.n_atoms < 1):
            raise ValueError(f"n_atoms must be a positive integer or None (square), got {self.n_atoms!r}")

    def atoms_for(self, n_features: int) -> int:
        """Atoms per location for a feature set of ``n_features`` channels."""
        return n_features if self.n_atoms is None else int(self.n_atoms)

    def nonzero_for(self, n_atoms: int, n_features: int) -> int:
        """Non-zeros per code for ``n_atoms`` atoms of ``n_features`` channels."""
        return max(1, min(round(self.sparsity * n_atoms), n_atoms, n_features))

    def check_features(self, n_features: int, name: str) -> None:
        """Refuse settings that cannot work on ``n_features`` channels, before any data is read."""
        n_atoms = self.atoms_for(n_features)
        if self.init == "haar" and n_atoms > n_features:
            raise ValueError(
                f"init=haar gives at most {n_features} atoms on {name!r} ({n_features} channels), but "
                f"n_atoms={n_atoms}: use ksvd.init=dct or random, or ksvd.n_atoms ≤ {n_features}"
            )
        if round(self.sparsity * n_atoms) > n_features:
            warnings.warn(
                f"sparsity={self.sparsity} of n_atoms={n_atoms} asks for {round(self.sparsity * n_atoms)} non-zeros "
                f"per code, but the {n_features} channels of {name!r} allow at most {n_features} independent "
                f"atoms: the codes use {n_features}. Lower ksvd.sparsity or ksvd.n_atoms to silence this.",
                UserWarning,
                stacklevel=3,
            )
        if self.init in ("dct2d", "haar2d") and (math.isqrt(n_features) ** 2 != n_features
                                                 or math.isqrt(n_atoms) ** 2 != n_atoms):
            raise ValueError(
                f"init={self.init} needs square channel and atom counts, got {n_features} channels and {n_atoms} "
                f"atoms on {name!r}: set backbone.trim_to_square=true (and a square ksvd.n_atoms), or use "
                f"ksvd.init={self.init[:-2]}"
            )

    def check_training_size(self, n_train: int, n_features: int, name: str) -> None:
        """Refuse a training set smaller than the dictionaries of a feature set need."""
        check_enough_signals(n_train, self.atoms_for(n_features), f" on {name!r} ({n_features} channels)")
