"""The course notes' training loop, as they write it: the reference `make bench` measures the pipeline against.

A ``Dataset`` that opens each JPEG with PIL on every access (CS230's ``SIGNSDataset``: the label is the file
name's first character), a ``DataLoader`` with shuffling, batch 32, the notes' ``Net`` (no batch norm, no
dropout), ``NLLLoss`` on its log-softmax and SGD (lr 0.001, momentum 0.9); a running loss and accuracy per
epoch. The notes' ``transforms.ToTensor()`` is written out with NumPy (the same values: HWC uint8 to CHW float
in [0, 1]), so the benchmark does not need torchvision.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from handsigns.model import Net


class SIGNSDataset(Dataset):
    """The notes' Dataset over given files and labels (the benchmark passes the split stage's train table, so
    both loops see the same images)."""

    def __init__(self, filenames: list[Path], labels: list[int], image_size: int = 64) -> None:
        self.filenames, self.labels, self.image_size = filenames, labels, image_size

    def __len__(self) -> int:
        return len(self.filenames)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        image = Image.open(self.filenames[idx]).convert("RGB").resize((self.image_size, self.image_size))
        tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)  # ToTensor()
        return tensor, self.labels[idx]


def train(
    files: list[Path], labels: list[int], num_classes: int, epochs: int, seed: int = 0, batch_size: int = 32
) -> dict:
    """Train the notes' way; returns images/s over all epochs (data loading included, as the notes run it)."""
    torch.manual_seed(seed)
    dataset = SIGNSDataset(files, labels)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    net = Net(num_classes, image_size=64, num_channels=32, batchnorm=False, dropout=0.0)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    loss_fn = nn.NLLLoss()
    started = time.perf_counter()
    for _ in range(epochs):
        net.train()
        running_loss, correct, seen = 0.0, 0, 0
        for inputs, labels in loader:
            optimizer.zero_grad()
            outputs = net(inputs)
            loss = loss_fn(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item() * len(labels)
            correct += (outputs.argmax(1) == labels).sum().item()
            seen += len(labels)
    seconds = time.perf_counter() - started
    return {"images_per_s": epochs * len(dataset) / seconds, "seconds": seconds, "train_accuracy": correct / seen}
