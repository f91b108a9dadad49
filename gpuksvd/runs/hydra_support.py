"""Glue between Hydra and the run layer: the OmegaConf resolvers that ``conf/`` uses.

Imported by the entry scripts (and the tests that compose configs) before any config is
composed. The library itself never imports this module, so it keeps running without Hydra.
"""
from __future__ import annotations

from omegaconf import OmegaConf

from .config import SWEEP_DIRNAME_EXCLUDED


def register_resolvers() -> None:
    """Register ``${gpuksvd.sweep_excluded_keys:}`` (idempotent)."""
    OmegaConf.register_new_resolver("gpuksvd.sweep_excluded_keys", lambda: list(SWEEP_DIRNAME_EXCLUDED),
                                    replace=True)


register_resolvers()
