"""The networks: the course notes' ``Net``, generalised (any number of classes, any input size), or any
torchvision classification architecture by name (``model.arch``), its head sized to the classes.

With ``batchnorm=False`` and ``dropout=0`` ``Net`` is exactly the notes' network: three 3x3 convolutions
(c, 2c, 4c channels), each followed by 2x2 max-pool and ReLU, then two linear layers and log-softmax.
``batchnorm=True`` and ``dropout>0`` give Stanford CS230's version of the same network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from handsigns.errors import UserError
from handsigns.params import decided
from handsigns.params.recipe import ModelParams


def feature_side(image_size: int) -> int:
    """Side of the feature map after three 2x2 max-pools (floor each time, as nn.MaxPool2d does)."""
    return image_size // 2 // 2 // 2


class Net(nn.Module):
    def __init__(
        self,
        num_classes: int,
        image_size: int = 64,
        num_channels: int = 32,
        batchnorm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if feature_side(image_size) < 1:
            raise ValueError(f"image_size {image_size} is too small: three 2x2 pools need at least 8 pixels")
        c = num_channels
        self.conv1 = nn.Conv2d(3, c, 3, stride=1, padding=1)
        self.conv2 = nn.Conv2d(c, 2 * c, 3, stride=1, padding=1)
        self.conv3 = nn.Conv2d(2 * c, 4 * c, 3, stride=1, padding=1)
        norm2d = nn.BatchNorm2d if batchnorm else lambda _: nn.Identity()
        self.bn1, self.bn2, self.bn3 = norm2d(c), norm2d(2 * c), norm2d(4 * c)
        self.flat_features = 4 * c * feature_side(image_size) ** 2
        self.fc1 = nn.Linear(self.flat_features, 4 * c)
        self.fcbn1 = nn.BatchNorm1d(4 * c) if batchnorm else nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc2 = nn.Linear(4 * c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: batch x 3 x S x S, normalised
        x = F.relu(F.max_pool2d(self.bn1(self.conv1(x)), 2))  # batch x c x S/2 x S/2
        x = F.relu(F.max_pool2d(self.bn2(self.conv2(x)), 2))  # batch x 2c x S/4 x S/4
        x = F.relu(F.max_pool2d(self.bn3(self.conv3(x)), 2))  # batch x 4c x S/8 x S/8
        x = x.flatten(1)  # batch x 4c*(S/8)^2 (the notes' view(-1, c*4*8*8) for S = 64)
        x = self.dropout(F.relu(self.fcbn1(self.fc1(x))))  # batch x 4c
        x = self.fc2(x)  # batch x num_classes
        return F.log_softmax(x, dim=1)


class Torchvision(nn.Module):
    """A torchvision classification architecture built by name, with ``num_classes`` outputs and log-softmax on
    top (``Net``'s contract). ``model.num_channels``, ``batchnorm`` and ``dropout`` are ``Net``'s alone."""

    def __init__(self, arch: str, num_classes: int, image_size: int) -> None:
        super().__init__()
        import torchvision

        names = torchvision.models.list_models(module=torchvision.models)  # the classifiers, not detection etc.
        if arch not in names:
            neither = f"params.yaml: model.arch = {arch!r} is neither net nor a torchvision classifier"
            raise UserError(f"{neither}; use net or one of {', '.join(names)}")
        self.arch = arch
        self.body = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        self.body.eval()
        try:  # too small an input fails inside some stage of the net: say so now, in one line
            with torch.no_grad():
                self.body(torch.zeros(1, 3, image_size, image_size))
        except (RuntimeError, ValueError, AssertionError) as exc:
            why = str(exc).splitlines()[0][:120]
            size = f"{image_size}x{image_size}"
            raise UserError(
                f"model.arch = {arch} does not take {size} images ({why}); raise model.image_size"
            ) from None
        self.body.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        logits = getattr(out, "logits", out)  # GoogLeNet/Inception return (logits, aux...) while training
        return F.log_softmax(logits, dim=1)


def build_net(num_classes: int, model_params: ModelParams) -> nn.Module:
    if model_params.arch != "net":
        return Torchvision(model_params.arch, num_classes, model_params.image_size)
    # an auto knob here is a caller's slip, not a user's: fit decides them first
    channels = decided("model.num_channels", model_params.num_channels)
    dropout = decided("model.dropout", model_params.dropout)
    return Net(num_classes, model_params.image_size, channels, model_params.batchnorm, dropout)


def head(net: nn.Module) -> str:
    """The name of ``net``'s last layer, the one sized to the classes (``fc2``, ``body.fc``,
    ``body.classifier.3``...): what a new class list replaces and what ``train.freeze_epochs`` leaves trainable."""
    last = [name for name, m in net.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    return last[-1]


class Classifier(nn.Module):
    """The network with its input normalisation: what trains, what evaluates and what is exported.

    ``forward``: uint8 pixels (batch x 3 x S x S, RGB) in, class probabilities out (the ONNX graph).
    Normalisation lives here and nowhere else, so training, evaluation, export and predict cannot disagree.
    """

    # buffers (register_buffer), declared as tensors: nn.Module's attribute lookup says Tensor | Module
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.channels_last = False

    def use_channels_last(self) -> Classifier:
        """Weights and inputs in NHWC layout (faster convolutions; same values, other float rounding)."""
        self.channels_last = True
        return self.to(memory_format=torch.channels_last)

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of uint8 pixels, or of float pixels already in [0, 1] (augmented batches)."""
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.log_probs(pixels).exp()
