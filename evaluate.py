"""Evaluate a saved model on the test split it was trained for, another dataset, or a folder.

    python evaluate.py model=outputs/.../model.safetensors                  # the model's own test split
    python evaluate.py model=model.safetensors dataset=mvtec dataset.root=/data/mvtec
    python evaluate.py model=model.safetensors images=/path/to/folder      # scores.csv + heatmaps/
    python evaluate.py model=model.safetensors threshold.validation_root=/path/to/labelled

Adding backbone=<name> makes sure the model file was trained with that backbone and layers.
"""
import math

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from gpuksvd.runs import evaluate_config, evaluate_run
from gpuksvd.runs.hydra_support import run_and_report


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    hydra_config = HydraConfig.get()
    result = run_and_report(lambda: evaluate_run(evaluate_config(resolved), hydra_config.runtime.output_dir),
                            run_dir=hydra_config.runtime.output_dir, resolved=resolved,
                            log_name=f"{hydra_config.job.name}.log", multirun=False,
                            debug=bool(resolved.get("debug")))
    main_metric = result.get("main_metric") if isinstance(result, dict) else None
    return main_metric if main_metric is not None else math.nan


if __name__ == "__main__":
    main()
