"""Fit PSDL on a dataset's training split and evaluate its test split.

    python train.py                                   # generated data, EfficientNet-Lite0, CPU or GPU
    python train.py backbone=efficientnet_b6 dataset=mvtec dataset.root=/data/mvtec_anomaly_detection
    python train.py -m ksvd.n_iter=10,20,50           # a sweep; see conf/experiment/ for the paper's
    torchrun --nproc-per-node=4 train.py backbone=wide_resnet50_2 dataset=mvtec   # one fit over 4 GPUs
    python train.py -m experiment=t2_architectures hydra/launcher=submitit_slurm   # a sweep on SLURM

A mistake in the input (a config value, a missing folder, an unreadable image) prints one
message; the traceback is in the run folder's train.log (debug=true prints it). Returns the
mean image AUROC so that Hydra sweepers can optimise it (None when a sweep's job failed).
"""
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from gpuksvd.runs import train_config, train_run
from gpuksvd.runs.distributed import log_file_suffix
from gpuksvd.runs.hydra_support import check_launch, check_plugins, run_and_report


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    hydra_config = HydraConfig.get()
    multirun = hydra_config.mode == RunMode.MULTIRUN
    check_launch(multirun)
    run_dir = hydra_config.runtime.output_dir
    result = run_and_report(lambda: train_run(train_config(resolved), run_dir), run_dir=run_dir, resolved=resolved,
                            log_name=f"{hydra_config.job.name}{log_file_suffix()}.log", multirun=multirun,
                            debug=bool(resolved.get("debug")))
    if not isinstance(result, dict):
        return None
    return result.get("main_metric")


if __name__ == "__main__":
    check_plugins(sys.argv[1:])  # a launcher or sweeper preset whose plugin is missing: say what to install
    main()
