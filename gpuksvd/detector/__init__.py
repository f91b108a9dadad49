"""The detector: per-location dictionaries and Gaussians, anomaly maps, model files.

:mod:`.config` holds the settings (:class:`PSDLConfig`), :mod:`.model` the fitted detector
(:class:`PSDL`, its buffers restored by ``load_state_dict``), :mod:`.gaussian` the per-location
Gaussians and Mahalanobis distances, :mod:`.maps` the anomaly maps and image scores,
:mod:`.model_file` saving and loading.
"""
from .config import STATS_CODES, PSDLConfig
from .maps import anomaly_maps, image_scores
from .model import PSDL, FitCallback, LocationModel
from .model_file import load_model, read_description, save_model

__all__ = ["FitCallback", "LocationModel", "PSDL", "PSDLConfig", "STATS_CODES", "anomaly_maps", "image_scores",
           "load_model", "read_description", "save_model"]
