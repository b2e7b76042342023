"""Small networks shared by the chapters."""
from __future__ import annotations

import torch
from torch import nn

from ._validate import check_int


class SmallCNN(nn.Module):
    """The book's MNIST classifier: two conv blocks and a two-layer head, returning logits.

    ``(B, 1, 28, 28)`` in [0, 1] -> ``(B, num_classes)``. :meth:`features` gives the
    penultimate activations Φ(x) of size ``hidden`` used by the detection and clustering chapters.
    About 0.4 M parameters at the default width; trains to ~97 % on the embedded MNIST in seconds.
    """

    def __init__(self, num_classes: int = 10, width: int = 32, hidden: int = 128, in_channels: int = 1) -> None:
        super().__init__()
        for name, v in (("num_classes", num_classes), ("width", width), ("hidden", hidden), ("in_channels", in_channels)):
            check_int(v, name)
        self.in_channels = in_channels
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, hidden), nn.ReLU(),
        )
        self.head = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations Φ(x), shape ``(B, hidden)``."""
        if x.ndim != 4 or x.shape[1:] != (self.in_channels, 28, 28):
            raise ValueError(f"SmallCNN expects images of shape (B, {self.in_channels}, 28, 28), got {tuple(x.shape)}")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class CAMNet(nn.Module):
    """A classifier with a global-average-pooling head, so that class activation maps exist.

    conv-BN-ReLU-pool ×2, conv-ReLU, global average pooling, linear: ``(B, C, H, W)`` -> logits.
    :meth:`feature_maps` returns the last convolutional maps ``f_j`` (``(B, J, H/4, W/4)``) and
    ``head.weight`` the class weights ``w_j^c``, the two ingredients of a CAM (Zhou et al. 2016).
    """

    def __init__(self, num_classes: int = 10, width: int = 32, in_channels: int = 1) -> None:
        super().__init__()
        for name, v in (("num_classes", num_classes), ("width", width), ("in_channels", in_channels)):
            check_int(v, name)
        self.in_channels = in_channels
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Last convolutional feature maps, ``(B, 4·width, H/4, W/4)``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"CAMNet expects images of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return self.body(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled features Φ(x), ``(B, 4·width)``."""
        return self.feature_maps(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ImageNetCAM(nn.Module):
    """A torchvision ImageNet ResNet seen as a CAM-ready classifier on [0, 1] images.

    Normalises with the ImageNet mean/std inside, exposes :meth:`feature_maps` (the output of
    ``layer4``) and ``head`` (the final linear layer), like :class:`CAMNet`. ``pretrained=True``
    loads torchvision's ImageNet weights, which torchvision downloads on first use: offline, and
    without them in torch's cache, this raises :class:`companion.data.DataNotAvailable`.
    """

    def __init__(self, arch: str = "resnet50", pretrained: bool = True) -> None:
        super().__init__()
        import torchvision

        from .data import DataNotAvailable

        if arch not in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
            raise ValueError(f"unknown arch {arch!r}; choose a torchvision ResNet (resnet18 ... resnet152)")
        builder = getattr(torchvision.models, arch)
        try:
            net = builder(weights="DEFAULT" if pretrained else None)
        except Exception as err:  # URLError, SSL or HTTP errors, depending on the network
            raise DataNotAvailable(f"could not load the ImageNet weights of {arch} ({err}); run once with internet access "
                                   f"so that torchvision caches them under $TORCH_HOME") from err
        self.in_channels = 3
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
        self.head = net.fc

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"ImageNetCAM expects RGB images of shape (B, 3, H, W), got {tuple(x.shape)}")
        return self.body((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.feature_maps(x).mean(dim=(2, 3)))
