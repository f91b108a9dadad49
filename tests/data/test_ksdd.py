"""Listing KolektorSDD: counts per split, labels, mask pairing, and actionable errors."""
from __future__ import annotations

import pytest

from gpuksvd.data import ANOMALOUS, NORMAL, list_ksdd
from tests.support.data_trees import make_ksdd_tree


def test_ksdd_labels_from_masks(tmp_path):
    root = make_ksdd_tree(tmp_path)  # 6 folders x 4 parts, kos05 copies kos01
    records = list_ksdd(root, seed=0)
    assert len(records) == 24
    defective = sorted(f"{r.path.parent.name}/{r.path.name}" for r in records if r.label == ANOMALOUS)
    # 0/1 masks and a 0/255 mask are all read as defective; the copy of kos01 too
    assert defective == ["kos01/Part2.jpg", "kos03/Part0.jpg", "kos04/Part1.jpg", "kos05/Part2.jpg"]
    assert all(r.split == "test" and r.mask_path.name == r.path.stem + "_label.bmp"
               for r in records if r.label == ANOMALOUS)
    assert all(r.mask_path is None for r in records if r.label == NORMAL)


def test_ksdd_split_proportion_and_duplicates(tmp_path):
    root = make_ksdd_tree(tmp_path, n_folders=10, n_parts=8, duplicates=((1, 9), (2, 10)))
    for seed in range(8):
        records = list_ksdd(root, seed=seed, test_fraction=0.25)
        normal = [r for r in records if r.label == NORMAL]
        n_test = sum(r.split == "test" for r in normal)
        assert abs(n_test - 0.25 * len(normal)) <= 1  # duplicate pairs make it approximate
        side = {f"{r.path.parent.name}/{r.path.name}": r.split for r in normal}
        for source, copy in (("kos01", "kos09"), ("kos02", "kos10")):
            for part in range(8):
                if f"{source}/Part{part}.jpg" in side:
                    assert side[f"{source}/Part{part}.jpg"] == side[f"{copy}/Part{part}.jpg"]
    # without the option, some seed separates a duplicate pair
    separated = False
    for seed in range(8):
        side = {f"{r.path.parent.name}/{r.path.name}": r.split
                for r in list_ksdd(root, seed=seed, keep_duplicates_together=False) if r.label == NORMAL}
        separated |= any(side[f"kos01/Part{p}.jpg"] != side[f"kos09/Part{p}.jpg"] for p in (0, 1, 3, 4, 5, 6, 7))
        n_test = sum(s == "test" for s in side.values())
        assert n_test == round(0.25 * len(side))
    assert separated


def test_ksdd_missing_label(tmp_path):
    root = make_ksdd_tree(tmp_path, n_folders=2, duplicates=())
    (root / "kos02" / "Part1_label.bmp").unlink()
    with pytest.raises(ValueError, match=r"kos02.Part1\.jpg has no mask .*Part1_label\.bmp"):
        list_ksdd(root)
