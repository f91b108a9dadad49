"""Evaluate a saved model on a dataset's test split, or score a folder of images.

    python evaluate.py model=outputs/.../model.safetensors                  # generated test split
    python evaluate.py model=model.safetensors dataset=mvtec dataset.root=/data/mvtec
    python evaluate.py model=model.safetensors images=/path/to/folder      # scores.csv + heatmaps/

Adding backbone=<name> makes sure the model file was trained with that backbone and layers.
"""
import logging
import math

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import gpuksvd.runs.hydra_support  # noqa: F401  (registers the resolvers conf/ uses)
from gpuksvd.runs import evaluate_config, evaluate_run

log = logging.getLogger("gpuksvd")


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    config = evaluate_config(OmegaConf.to_container(cfg, resolve=True))
    result = evaluate_run(config, HydraConfig.get().runtime.output_dir)
    main_metric = result.get("main_metric")
    return main_metric if main_metric is not None else math.nan


if __name__ == "__main__":
    main()
