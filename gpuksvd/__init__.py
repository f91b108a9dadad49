"""gpuksvd: Patchwise Sparse Dictionary Learning (PSDL) for image anomaly detection, batched
over locations on CUDA or the CPU.

One orientation everywhere:

- signals ``(P, N, C)``: P spatial locations of a feature map, N signals (training images),
  C channels;
- dictionaries ``(P, K, C)``: K atoms per location, atoms as unit-norm rows;
- codes ``(P, N, K)``: ``signals ≈ codes @ dictionary`` at each location.

The pipeline, module by module: :mod:`~gpuksvd.data` lists and loads images,
:mod:`~gpuksvd.features` extracts timm activation maps, :mod:`~gpuksvd.dictionaries`,
:mod:`~gpuksvd.omp` and :mod:`~gpuksvd.ksvd` learn and apply the per-location dictionaries,
:mod:`~gpuksvd.model` holds the fitted detector and its anomaly maps, :mod:`~gpuksvd.metrics`
scores them.
"""
from .dictionaries import (
    dct2d_dictionary,
    dct_dictionary,
    haar_dictionary,
    initial_dictionary,
    random_dictionary,
)
from .ksvd import KSVDResult, ksvd
from .omp import LinearDependenceWarning, batch_omp

__version__ = "0.1.0"

# The detector side pulls in timm and the data stack: import it on first use, so that the
# sparse-coding engine stays a light import.
_LAZY = {
    "PSDL": "model", "PSDLConfig": "model", "FeatureExtractor": "features",
    "load_model": "model_io", "save_model": "model_io", "train_run": "runs", "evaluate_run": "runs",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'gpuksvd' has no attribute {name!r}")


__all__ = [
    "FeatureExtractor",
    "KSVDResult",
    "PSDL",
    "PSDLConfig",
    "LinearDependenceWarning",
    "batch_omp",
    "dct2d_dictionary",
    "dct_dictionary",
    "evaluate_run",
    "haar_dictionary",
    "initial_dictionary",
    "ksvd",
    "load_model",
    "random_dictionary",
    "save_model",
    "train_run",
]
