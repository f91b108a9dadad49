"""gpuksvd: Patchwise Sparse Dictionary Learning (PSDL) for image anomaly detection, batched
over locations on CUDA or the CPU.

One orientation everywhere:

- signals ``(P, N, C)``: P spatial locations of a feature map, N signals (training images),
  C channels;
- dictionaries ``(P, K, C)``: K atoms per location, atoms as unit-norm rows;
- codes ``(P, N, K)``: ``signals ≈ codes @ dictionary`` at each location.

The sub-packages follow the pipeline:

- :mod:`~gpuksvd.sparse` — the engine: Batch-OMP and K-SVD for all locations at once (tensors in,
  tensors out);
- :mod:`~gpuksvd.features` — timm backbones and their weights, the feature extractor;
- :mod:`~gpuksvd.detector` — the PSDL detector: dictionaries and Gaussians per location, anomaly
  maps, model files;
- :mod:`~gpuksvd.evaluation` — image and pixel metrics, AUPRO, score normalisation;

and beside them :mod:`~gpuksvd.data` (dataset listings, preprocessing, the generated dataset),
:mod:`~gpuksvd.runs` (what ``train.py`` / ``evaluate.py`` do) and :mod:`~gpuksvd.sweeps`
(tables and figures of a multirun folder). The library runs without Hydra; only the entry
scripts compose configs.
"""
from .sparse import (
    KSVDResult,
    LinearDependenceWarning,
    batch_omp,
    dct2d_dictionary,
    dct_dictionary,
    haar_dictionary,
    initial_dictionary,
    ksvd,
    random_dictionary,
    update_atoms,
)

__version__ = "0.1.0"

# The detector side pulls in timm and the data stack: import it on first use, so that the
# sparse-coding engine stays a light import.
_LAZY = {
    "PSDL": "detector", "PSDLConfig": "detector", "load_model": "detector", "save_model": "detector",
    "FeatureExtractor": "features", "Preprocess": "data",
    "train_run": "runs", "evaluate_run": "runs",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'gpuksvd' has no attribute {name!r}")


__all__ = [
    "FeatureExtractor",
    "KSVDResult",
    "LinearDependenceWarning",
    "PSDL",
    "PSDLConfig",
    "Preprocess",
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
    "update_atoms",
]
