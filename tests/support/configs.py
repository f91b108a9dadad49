"""Composing the project's Hydra configs in tests, as the entry scripts do."""
from __future__ import annotations

from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

import gpuksvd.runs.hydra_support  # noqa: F401  (registers the resolvers conf/ uses)

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"


def composed(overrides, config_name: str = "config") -> dict:
    """The resolved config of ``conf/<config_name>.yaml`` with ``overrides``, as a plain dict."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name=config_name, overrides=list(overrides)), resolve=True)


def options(group: str) -> list[str]:
    """The option names of a config group (``conf/<group>/*.yaml``), hidden ones left out."""
    return sorted(path.stem for path in (CONF / group).glob("*.yaml") if not path.stem.startswith("_"))


def experiment_override(name: str) -> str:
    """``experiment=<name>`` once conf/config.yaml lists the experiment group in its defaults,
    ``+experiment=<name>`` (append) while it does not."""
    defaults = yaml.safe_load((CONF / "config.yaml").read_text())["defaults"]
    listed = any(isinstance(entry, dict) and any(key.split()[-1] == "experiment" for key in entry)
                 for entry in defaults)
    return f"experiment={name}" if listed else f"+experiment={name}"


def composed_with_hydra(overrides):
    """The composed config's ``hydra`` node (unresolved) and the task config (resolved)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    hydra = cfg.hydra
    task = OmegaConf.to_container(cfg, resolve=False)
    task.pop("hydra")
    return hydra, OmegaConf.to_container(OmegaConf.create(task), resolve=True)


def sweep_values(params) -> dict[str, list[str]]:
    """{key: [value text, ...]} of hydra.sweeper.params, parsed as Hydra parses them."""
    parser = OverridesParser.create()
    overrides = {key: parser.parse_override(f"{key}={value}") for key, value in params.items()}
    return {key: list(override.sweep_string_iterator()) if override.is_sweep_override()
            else [override.get_value_element_as_str()] for key, override in overrides.items()}
