"""Overrides of a small, fast training run."""

# Small and fast: 64x64 images, ResNet-18 layer2 (stride 8: an 8x8 map, 128 channels),
# 16 atoms, 2 iterations, random (seeded) backbone weights.
TINY = [
    "backbone=resnet18", "backbone.weights=random", "backbone.layers=[layer2]",
    "dataset=mvtec", "dataset.resize=64", "dataset.crop=64",
    "ksvd.n_atoms=16", "ksvd.n_iter=2", "num_workers=0", "progress=false", "n_overlays=2", "device=cpu",
]
