"""A small MVTec-AD-like dataset generated on first use, so the default run needs no download.

:mod:`.scenes` renders clean images (texture photographs bundled with scikit-image, objects
drawn from signed distance functions), :mod:`.defects` draws defects over them with exact
masks, :mod:`.writer` renders samples and writes the tree in the MVTec AD layout,
:mod:`.cache` keeps one complete copy per parameter set, and :mod:`.cli` is
``python -m gpuksvd.data.generated``.
"""
from .cache import default_cache_dir, ensure_generated
from .defects import OBJECT_DEFECTS, TEXTURE_DEFECTS, defect_types
from .scenes import GENERATED_CATEGORIES, GENERATED_OBJECTS, GENERATED_TEXTURES, load_texture_source
from .writer import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_N_TEST_DEFECT,
    DEFAULT_N_TEST_GOOD,
    DEFAULT_N_TRAIN,
    FORMAT_VERSION,
    MARKER_NAME,
    generate_dataset,
    render_sample,
)

__all__ = [
    "DEFAULT_IMAGE_SIZE", "DEFAULT_N_TEST_DEFECT", "DEFAULT_N_TEST_GOOD", "DEFAULT_N_TRAIN", "FORMAT_VERSION",
    "GENERATED_CATEGORIES", "GENERATED_OBJECTS", "GENERATED_TEXTURES", "MARKER_NAME", "OBJECT_DEFECTS",
    "TEXTURE_DEFECTS", "default_cache_dir", "defect_types", "ensure_generated", "generate_dataset",
    "load_texture_source", "render_sample",
]
