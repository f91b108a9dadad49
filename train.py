"""Fit PSDL on a dataset's training split and evaluate its test split.

    python train.py                                   # generated data, EfficientNet-Lite0, CPU or GPU
    python train.py backbone=efficientnet_b6 dataset=mvtec dataset.root=/data/mvtec_anomaly_detection
    python train.py -m ksvd.n_iter=10,20,50           # a sweep; see conf/experiment/ for the paper's

A mistake in the input (a config value, a missing folder, an unreadable image) prints one
message; the traceback is in the run folder's train.log (debug=true prints it). Returns the
mean image AUROC so that Hydra sweepers can optimise it.
"""
import math

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from gpuksvd.runs import train_config, train_run
from gpuksvd.runs.hydra_support import run_and_report


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    hydra_config = HydraConfig.get()
    result = run_and_report(lambda: train_run(train_config(resolved), hydra_config.runtime.output_dir),
                            run_dir=hydra_config.runtime.output_dir, resolved=resolved,
                            log_name=f"{hydra_config.job.name}.log", multirun=hydra_config.mode == RunMode.MULTIRUN,
                            debug=bool(resolved.get("debug")))
    if not isinstance(result, dict) or result.get("main_metric") is None:
        return math.nan
    return result["main_metric"]


if __name__ == "__main__":
    main()
