"""Feature extraction: images -> one or more feature maps, the signals PSDL models per location.

The extractor keeps only the backbone modules up to the deepest requested layer, so a request
for ``layer1`` never runs (or stores) ``layer2`` .. ``layer4``. Several layers are fused in
one of two ways, as in the PSDL paper:

* ``"concat"`` (the paper's "1,2,3": layers combined in the dictionary learning): every map is
  average-pooled to the smallest map's size and the maps are concatenated along channels, in
  the order the layers are given: one feature set, one dictionary per location.
* ``"separate"`` (the paper's "1+2+3": layers combined in the calculation): one feature set per
  layer, each with its own dictionaries; the model upsamples and sums their anomaly maps.

Optionally each set keeps only its first d² channels, d = floor(sqrt(C)), as the reference
code does so that the 2-D DCT dictionary initialisation fits.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import get_spec, probe_units, split_units
from .weights import build_model, load_weights

FUSIONS = ("concat", "separate")


class FeatureExtractor(nn.Module):
    """A frozen, truncated timm backbone that returns PSDL's feature sets.

    Parameters
    ----------
    backbone : str
        Config name, a key of :data:`gpuksvd.features.backbones.BACKBONES`.
    layers : sequence of str
        Layers to read, ``layer1``..``layer4`` (ResNets) or ``block<N>`` (EfficientNets, the
        flat MBConv block index). Kept in the given order.
    weights : str
        ``"pretrained"``, ``"random"`` or a path to a state-dict file
        (:func:`gpuksvd.features.weights.load_weights`).
    fusion : {"concat", "separate"}
        How several layers become feature sets (module docstring).
    trim_to_square : bool
        Keep the first d² channels of each set, d = floor(sqrt(C)).

    Attributes
    ----------
    backbone : str
    layers : list of str
    set_names : list of str
        One per feature set: ``"layer1+layer2"`` for concat, the layer names for separate.
    channels : list of int
        Channels of each set, after fusion and trimming.
    strides : list of int
        Input pixels per feature-map cell of each set.
    mean, std : tuple of float
        Input normalisation the weights expect; images passed to :meth:`forward` must already
        be normalised with them.
    weights_source : str
        Where the weights came from (``"timm:<tag>"``, ``"package:<...>"``, ``"file:<path>"``,
        ``"random"``).

    Raises
    ------
    ValueError
        Unknown backbone, layer or fusion (the message lists the valid ones), no layer, or a
        repeated layer.
    RuntimeError
        ``weights="pretrained"`` and the weights cannot be obtained (no network, nothing
        cached); the message says how to fix it.
    """

    def __init__(
        self,
        backbone: str,
        layers: Sequence[str],
        *,
        weights: str = "pretrained",
        fusion: str = "concat",
        trim_to_square: bool = False,
    ) -> None:
        super().__init__()
        spec = get_spec(backbone)
        layers = [layers] if isinstance(layers, str) else list(layers)
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}: choose one of {', '.join(FUSIONS)}")
        if not layers:
            raise ValueError(f"no layer requested for backbone {backbone!r}: pass at least one")
        if len(set(layers)) != len(layers):
            raise ValueError(f"layers {layers} repeat a layer: list each layer once")
        model = build_model(spec)
        stem, units = split_units(model, spec.family)
        unit_names = [name for name, _ in units]
        unknown = [layer for layer in layers if layer not in unit_names]
        if unknown:
            raise ValueError(
                f"unknown layer(s) {unknown} for backbone {backbone!r}: valid layers are "
                f"{_name_range(unit_names)} (the paper's default: {', '.join(spec.default_layers)})"
            )
        # Names are checked before the weights, which may take long or fail for want of network.
        self.weights_source = load_weights(model, spec, weights)
        deepest = max(unit_names.index(layer) for layer in layers)
        self.stem = stem
        self.units = nn.ModuleList(unit for _, unit in units[: deepest + 1])
        self._unit_names = unit_names[: deepest + 1]
        self.requires_grad_(False)
        self.eval()

        self.backbone = backbone
        self.layers = layers
        self.fusion = fusion
        self.trim_to_square = trim_to_square
        self.mean = spec.mean
        self.std = spec.std
        probed = probe_units(self.stem, list(zip(self._unit_names, self.units)))
        self.layer_channels = [probed[layer][0] for layer in layers]
        self.layer_strides = [probed[layer][1] for layer in layers]
        if fusion == "concat":
            self.set_names = ["+".join(layers)]
            channels = [sum(self.layer_channels)]
            self.strides = [max(self.layer_strides)]
        else:
            self.set_names = list(layers)
            channels = list(self.layer_channels)
            self.strides = list(self.layer_strides)
        self.channels = [math.isqrt(c) ** 2 if trim_to_square else c for c in channels]

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Stay in eval mode: the backbone is frozen (BatchNorm statistics must not move)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> list[Tensor]:
        """Feature sets of a batch of images.

        Parameters
        ----------
        images : Tensor of shape (B, 3, H, W)
            Float images already normalised with :attr:`mean` and :attr:`std`.

        Returns
        -------
        list of Tensor
            One per feature set, of shape (B, channels[i], h_i, w_i) with
            h_i = ceil(H / strides[i]) (see :meth:`output_shapes`).
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}: batch "
                f"RGB images (grey images repeated to 3 channels)"
            )
        wanted = set(self.layers)
        maps = {}
        x = self.stem(images)
        for name, unit in zip(self._unit_names, self.units):
            x = unit(x)
            if name in wanted:
                maps[name] = x
        features = [maps[layer] for layer in self.layers]
        if self.fusion == "concat":
            features = [concat_pooled(features)]
        if self.trim_to_square:
            features = [f[:, :c] for f, c in zip(features, self.channels)]
        return features

    def output_shapes(self, image_size: tuple[int, int]) -> list[tuple[int, int, int]]:
        """Shapes (channels, h, w) of the feature sets for images of ``image_size`` (H, W).

        Every backbone here pads like TF "same" or symmetrically, so a map of stride s is
        ceil(H / s) high; the tests check this against real forwards.
        """
        height, width = image_size
        return [(c, -(-height // s), -(-width // s)) for c, s in zip(self.channels, self.strides)]

    def describe(self) -> dict:
        """JSON-able description stored in a model file and checked when it is loaded."""
        return {
            "backbone": self.backbone,
            "layers": list(self.layers),
            "fusion": self.fusion,
            "trim_to_square": self.trim_to_square,
            "set_names": list(self.set_names),
            "channels": list(self.channels),
            "strides": list(self.strides),
            "mean": list(self.mean),
            "std": list(self.std),
            "weights": self.weights_source,
        }


def build_extractor(backbone: str, layers: Sequence[str], *, weights: str = "pretrained", fusion: str = "concat",
                    trim_to_square: bool = False) -> FeatureExtractor:
    """A :class:`FeatureExtractor` whose ``weights="random"`` are drawn from a fixed seed, so
    that the same random backbone is rebuilt when a model file is loaded (tests, timing)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return FeatureExtractor(backbone, list(layers), weights=weights, fusion=fusion,
                                trim_to_square=trim_to_square)


def concat_pooled(maps: Sequence[Tensor]) -> Tensor:
    """Average-pool maps to the smallest one's size and concatenate them along channels.

    Parameters
    ----------
    maps : sequence of Tensor of shape (B, C_i, h_i, w_i)

    Returns
    -------
    Tensor of shape (B, sum C_i, min h_i, min w_i)
        When the sizes divide, pooling is ``avg_pool2d`` with the size ratio as kernel and
        stride; otherwise adaptive average pooling.
    """
    height = min(m.shape[-2] for m in maps)
    width = min(m.shape[-1] for m in maps)
    pooled = [m if m.shape[-2:] == (height, width) else F.adaptive_avg_pool2d(m, (height, width))
              for m in maps]
    return torch.cat(pooled, dim=1)


def _name_range(names: list[str]) -> str:
    """``'layer1, layer2, layer3, layer4'``, or ``'block0, block1, ..., block38'`` when long."""
    if len(names) <= 6:
        return ", ".join(names)
    return f"{names[0]}, {names[1]}, ..., {names[-1]}"
