"""Fit PSDL on a dataset's training split and evaluate its test split.

    python train.py                                   # generated data, EfficientNet-Lite0, CPU or GPU
    python train.py backbone=efficientnet_b6 dataset=mvtec dataset.root=/data/mvtec_anomaly_detection
    python train.py -m ksvd.n_iter=10,20,50           # a sweep; see conf/experiment/ for the paper's

Returns the mean image AUROC so that Hydra sweepers can optimise it.
"""
import logging
import math

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import gpuksvd.runs.hydra_support  # noqa: F401  (registers the resolvers conf/ uses)
from gpuksvd.files import write_json
from gpuksvd.runs import FAILED_FILE, train_config, train_run

log = logging.getLogger("gpuksvd")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        result = train_run(train_config(resolved), run_dir)
    except Exception as error:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        # In a sweep one failed job must not stop the others: record why, go on.
        log.exception("run failed: %s", error)
        write_json({"error": f"{type(error).__name__}: {error}", "config": resolved}, f"{run_dir}/{FAILED_FILE}")
        return math.nan
    return result["main_metric"] if result["main_metric"] is not None else math.nan


if __name__ == "__main__":
    main()
