"""Our own PyTorch implementations of the case-study convnets, sized for 1x28x28 Fashion-MNIST."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

# Keras' BatchNormalization epsilon, which the seed's resnet_v1/resnet_v2 use.
KERAS_BN_EPS = 1e-3


def _conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998): two 5x5 convolutions and three fully connected layers."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 28 -> 14
            nn.Conv2d(6, 16, 5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 14 -> 10 -> 5
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class AlexNet(nn.Module):
    """AlexNet (Krizhevsky et al., 2012): five convolutions, max-pooling after the 1st, 2nd and 5th,
    two dropout-regularised hidden fully connected layers; widths scaled down for 28x28 and batch
    normalisation in place of local response normalisation."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(1, 32, 5),
            nn.MaxPool2d(2),  # 28 -> 14
            *_conv_bn_relu(32, 64, 3),
            nn.MaxPool2d(2),  # 14 -> 7
            *_conv_bn_relu(64, 96, 3),
            *_conv_bn_relu(96, 96, 3),
            *_conv_bn_relu(96, 64, 3),
            nn.MaxPool2d(2, ceil_mode=True),  # 7 -> 4
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.5),
            nn.Linear(64 * 4 * 4, 384),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(384, 384),
            nn.ReLU(inplace=True),
            nn.Linear(384, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# The seed's VGG table: convolutions per block for configurations D (VGG16) and E (VGG19).
VGG_BLOCKS = {"D": (2, 2, 3, 3, 3), "E": (2, 2, 4, 4, 4)}


class VGG(nn.Module):
    """VGG (Simonyan and Zisserman, 2014), configuration D or E: 3x3 convolutions in five blocks each
    closed by max-pooling, then three fully connected layers; widths divided by 8 (64 -> 8 ... 512 -> 64)
    with batch normalisation."""

    def __init__(self, config: str, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        widths = (width, 2 * width, 4 * width, 8 * width, 8 * width)
        layers: list[nn.Module] = []
        cin = 1
        for n_convs, cout in zip(VGG_BLOCKS[config], widths, strict=True):
            for _ in range(n_convs):
                layers += _conv_bn_relu(cin, cout)
                cin = cout
            # ceil_mode keeps five poolings possible on 28x28: 28 -> 14 -> 7 -> 4 -> 2 -> 1
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cin, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(256, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class Inception(nn.Module):
    """Inception v1 module: 1x1, 1x1 -> 3x3, 1x1 -> 5x5 and 3x3 max-pool -> 1x1 branches, concatenated."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int) -> None:
        super().__init__()
        self.b1 = nn.Sequential(*_conv_bn_relu(cin, c1, 1))
        self.b3 = nn.Sequential(*_conv_bn_relu(cin, c3r, 1), *_conv_bn_relu(c3r, c3, 3))
        self.b5 = nn.Sequential(*_conv_bn_relu(cin, c5r, 1), *_conv_bn_relu(c5r, c5, 5))
        self.bp = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), *_conv_bn_relu(cin, cp, 1))
        self.out_channels = c1 + c3 + c5 + cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], dim=1)


# GoogLeNet's nine inception modules (Szegedy et al., 2014, table 1), channel counts before scaling.
GOOGLENET_MODULES: dict[str, tuple[int, int, int, int, int, int]] = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


class GoogLeNet(nn.Module):
    """GoogLeNet (inception v1): a three-convolution stem, nine inception modules, global average
    pooling and one linear layer, 22 weight layers deep; channels divided by `divisor`."""

    def __init__(self, num_classes: int = 10, divisor: int = 8) -> None:
        super().__init__()

        def s(c: int) -> int:
            return max(4, c // divisor)

        self.stem = nn.Sequential(
            *_conv_bn_relu(1, s(64), 3),
            *_conv_bn_relu(s(64), s(64), 1),
            *_conv_bn_relu(s(64), s(192), 3),
            nn.MaxPool2d(2),  # 28 -> 14
        )
        blocks: list[nn.Module] = []
        cin = s(192)
        for name, spec in GOOGLENET_MODULES.items():
            if name in ("4a", "5a"):
                blocks.append(nn.MaxPool2d(2, ceil_mode=True))  # 14 -> 7 -> 4
            module = Inception(cin, *(s(c) for c in spec))
            blocks.append(module)
            cin = module.out_channels
        self.inception = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(cin, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.inception(self.stem(x)))


def _same_conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    # Keras Conv2D(padding='same', strides=1): bias on, zero padding k // 2 for odd kernels
    return nn.Conv2d(cin, cout, k, stride=1, padding=k // 2, bias=True)


class ResBlockV1(nn.Module):
    """The seed's res_block_v1: conv-BN-ReLU-conv-BN, added to the identity (or a 1x1 conv where the
    filter count changes), then ReLU."""

    def __init__(self, input_filter: int, output_filter: int) -> None:
        super().__init__()
        self.res = nn.Sequential(
            _same_conv(input_filter, output_filter, 3),
            nn.BatchNorm2d(output_filter, eps=KERAS_BN_EPS),
            nn.ReLU(),
            _same_conv(output_filter, output_filter, 3),
            nn.BatchNorm2d(output_filter, eps=KERAS_BN_EPS),
        )
        self.identity: nn.Module = (
            nn.Identity() if input_filter == output_filter else _same_conv(input_filter, output_filter, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.identity(x) + self.res(x))


class ResBlockV2(nn.Module):
    """The seed's res_block_v2 (pre-activation): BN-ReLU-conv-BN-ReLU-conv, added to the identity (or a
    1x1 conv where the filter count changes), no activation after the addition."""

    def __init__(self, input_filter: int, output_filter: int) -> None:
        super().__init__()
        self.res = nn.Sequential(
            nn.BatchNorm2d(input_filter, eps=KERAS_BN_EPS),
            nn.ReLU(),
            _same_conv(input_filter, output_filter, 3),
            nn.BatchNorm2d(output_filter, eps=KERAS_BN_EPS),
            nn.ReLU(),
            _same_conv(output_filter, output_filter, 3),
        )
        self.identity: nn.Module = (
            nn.Identity() if input_filter == output_filter else _same_conv(input_filter, output_filter, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.identity(x) + self.res(x)


def _he_normal_dense(fc: nn.Linear) -> nn.Linear:
    # Keras' he_normal: truncated normal, std sqrt(2 / fan_in); Keras zero-initialises the bias
    std = (2.0 / fc.in_features) ** 0.5
    nn.init.trunc_normal_(fc.weight, std=std, a=-2 * std, b=2 * std)
    nn.init.zeros_(fc.bias)
    return fc


class ResNetV1(nn.Module):
    """The seed's resnet_v1: conv3x3(16)-ReLU, res_block_v1(16, 16), res_block_v1(16, 32), Flatten, Dense.

    The seed's Dense ends in softmax; this module returns the logits (the service applies softmax)."""

    def __init__(self, num_classes: int = 10, size: int = 28) -> None:
        super().__init__()
        self.stem = nn.Sequential(_same_conv(1, 16, 3), nn.ReLU())
        self.blocks = nn.Sequential(ResBlockV1(16, 16), ResBlockV1(16, 32))
        self.head = nn.Sequential(nn.Flatten(), _he_normal_dense(nn.Linear(32 * size * size, num_classes)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class ResNetV2(nn.Module):
    """The seed's resnet_v2: conv3x3(16)-ReLU, res_block_v2(16, 16), res_block_v2(16, 32), BN, Flatten,
    Dense. The seed's Dense ends in softmax; this module returns the logits."""

    def __init__(self, num_classes: int = 10, size: int = 28) -> None:
        super().__init__()
        self.stem = nn.Sequential(_same_conv(1, 16, 3), nn.ReLU())
        self.blocks = nn.Sequential(ResBlockV2(16, 16), ResBlockV2(16, 32))
        self.head = nn.Sequential(
            nn.BatchNorm2d(32, eps=KERAS_BN_EPS),
            nn.Flatten(),
            _he_normal_dense(nn.Linear(32 * size * size, num_classes)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class CifarBlock(nn.Module):
    """Two 3x3 conv-BN layers (He et al., 2016, section 4.2); with `shortcut`, the input is added back
    through an identity (option A: strided subsampling and zero channel padding, no parameters)."""

    def __init__(self, cin: int, cout: int, stride: int, shortcut: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn_relu(cin, cout, 3, stride),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = shortcut
        self.stride = stride
        self.pad = cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.shortcut:
            identity = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
            if self.pad:
                identity = nn.functional.pad(identity, (0, 0, 0, 0, 0, self.pad))
            out = out + identity
        return torch.relu(out)


class CifarNet(nn.Module):
    """The 6n+2-layer network of He et al. (2016) for small images, n = 3: 20 weight layers, 16/32/64
    filters; `shortcut=False` is the plain net, `shortcut=True` the ResNet with identity shortcuts."""

    def __init__(self, shortcut: bool, num_classes: int = 10, n: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [*_conv_bn_relu(1, 16, 3)]
        cin = 16
        for stage, cout in enumerate((16, 32, 64)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(CifarBlock(cin, cout, stride, shortcut))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "fmnist-lenet5": LeNet5,
    "fmnist-alexnet": AlexNet,
    "fmnist-vgg16": lambda: VGG("D"),
    "fmnist-vgg19": lambda: VGG("E"),
    "fmnist-googlenet": GoogLeNet,
    "fmnist-resnet-v1": ResNetV1,
    "fmnist-resnet-v2": ResNetV2,
    "fmnist-plain20": lambda: CifarNet(shortcut=False),
    "fmnist-resnet20": lambda: CifarNet(shortcut=True),
}


def build_net(name: str) -> nn.Module:
    """A freshly initialised network of the Fashion-MNIST zoo."""
    try:
        builder = BUILDERS[name]
    except KeyError:
        raise ValueError(f"Unknown model {name}") from None
    return builder()
