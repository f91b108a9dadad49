"""What results depend on: neutral keys ignored, config and data differences found and named."""
import os

import numpy as np

from gpuksvd.data import ImageRecord
from gpuksvd.runs.fingerprint import differences, result_config, run_fingerprint, same_model, same_results
from tests.support.configs import composed
from tests.support.data_trees import planted, save


class Listing:
    """The part of an ImageDataset a fingerprint reads."""

    def __init__(self, records):
        self.records = records

    def __len__(self):
        return len(self.records)


class Splits:
    def __init__(self, train, test):
        self.train, self.test = Listing(train), Listing(test)


def image(path, seed):
    return save(path, planted(np.random.default_rng(seed), (8, 8), defect=False)[0])


def test_only_result_changing_keys_count():
    base = composed([])
    neutral = composed(["device=cpu", "num_workers=0", "progress=false", "batch_size=7", "n_overlays=0",
                        "skip_existing=false", "cache=false", "debug=true", "model_file=other.safetensors",
                        "report.average=[seed]"])
    assert result_config(base) == result_config(neutral)
    assert result_config(base) != result_config(composed(["ksvd.n_iter=3"]))
    assert result_config(base) != result_config(composed(["normalize=train"]))
    assert result_config(base) != result_config(composed(["dataset.root=/elsewhere"]))


def test_same_config_and_files_give_the_same_fingerprint_and_changes_are_named(tmp_path):
    records = [ImageRecord(image(tmp_path / f"{i}.png", i), "a", "train", 0, "good") for i in range(3)]
    splits = Splits(records, records[:1])
    first = run_fingerprint(composed([]), splits)
    assert same_results(first, run_fingerprint(composed(["device=cpu"]), splits))
    changed = run_fingerprint(composed(["ksvd.n_iter=3", "normalize=train"]), splits)
    assert not same_results(first, changed)
    assert same_model(first, run_fingerprint(composed(["normalize=train"]), splits))  # the fit does not change
    assert differences(first, changed) == 'ksvd.n_iter: 20 → 3; normalize: "none" → "train"'
    image(records[1].path, 9)  # a "fixed" image
    os.utime(records[1].path, ns=(5, 5))
    fixed = run_fingerprint(composed([]), splits)
    assert not same_results(first, fixed) and not same_model(first, fixed)
    assert differences(first, fixed) == "the data (files added, removed or changed)"
    assert not same_results(None, first) and differences(None, first).startswith("no fingerprint")
