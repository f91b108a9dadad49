"""Hand-written sweep run folders, as train.py writes them, for the report's table rules."""
from __future__ import annotations

import json

import numpy as np
import yaml

TIMES = {"features_s": 1.0, "ksvd_s": 2.0, "ksvd_per_iter_s": 0.5, "fit_s": 3.0, "test_scoring_s": 1.0,
         "test_images_per_s": 10.0}


def metrics_of(per_category, groups):
    """A metrics.json "metrics" dict from {category: (image AUROC, pixel AUROC)}; groups and the
    mean are the means of their categories (image AP = image AUROC, AUPRO = pixel AUROC)."""
    full = {name: {"image_auroc": image, "image_ap": image, "pixel_auroc": pixel, "aupro": pixel}
            for name, (image, pixel) in per_category.items()}

    def mean_of(names):
        return {metric: float(np.mean([full[name][metric] for name in names])) for metric in full[names[0]]}

    present = {group: [name for name in members if name in full] for group, members in groups.items()}
    mean = mean_of(list(full))
    return {"per_category": full, "groups": {group: mean_of(names) for group, names in present.items() if names},
            "mean": mean, "main_metric": mean["image_auroc"]}


def fake_run(folder, overrides, config, per_category=None, groups=None, status="finished", fit_s=3.0, job=0):
    """A run folder as train.py writes it: .hydra/ plus metrics.json, failed.json or nothing."""
    hydra_dir = folder / ".hydra"
    hydra_dir.mkdir(parents=True)
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()]))
    (hydra_dir / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {
        "runtime": {"choices": {"backbone": "resnet18", "dataset": "mvtec", "ksvd": "paper"}},
        "job": {"num": job, "config": {"override_dirname": {"exclude_keys": ["experiment", "dataset.root"]}}}}}))
    (hydra_dir / "config.yaml").write_text(yaml.safe_dump(config))
    if status == "finished":
        result = {"metrics": metrics_of(per_category, groups or {}), "times": {**TIMES, "fit_s": fit_s},
                  "peak_memory_bytes": 2 ** 20, "train_error": {"layer3": [[0.9, 0.8], [0.5, 0.4]]},
                  "train_mse": {"layer3": [[9.0, 8.0], [5.0, 4.0]]},
                  "feature_shapes": [[256, 1, 2]], "config": config}
        (folder / "metrics.json").write_text(json.dumps(result))
    elif status == "failed":
        (folder / "failed.json").write_text(json.dumps({"error": "ValueError: planted failure", "config": config}))


GROUPS = {"textures": ["grid"], "objects": ["bottle", "cable"]}
