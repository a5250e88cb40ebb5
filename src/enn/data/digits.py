"""scikit-learn's bundled 8x8 handwritten digits (1,797 images; nothing to download).

Each image is 8 time steps of 8 pixels, divided by 16 (the pixel maximum) into [0, 1].
Splits are stratified by class and seeded by ``data_seed``: ``test_size`` (300) images for
testing, then ``val_size`` (300) of the rest for validation, the remaining 1,197 for
training. A quick task for smoke tests and CPU-only demos.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from .base import ClassificationDataModule, check_int

SIDE = 8


class DigitsDataModule(ClassificationDataModule):
    """8 steps x 8 values; stratified seeded 1,197 / 300 / 300 split by default."""

    task = "digits"

    def __init__(self, val_size: int = 300, test_size: int = 300, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.val_size = check_int("val_size", val_size, 10)
        self.test_size = check_int("test_size", test_size, 10)
        self.seq_len, self.input_size = SIDE, SIDE
        self.num_classes = 10
        self.split_indices: dict[str, np.ndarray] = {}

    def _splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        images, labels = load_digits(return_X_y=True)
        if self.val_size + self.test_size >= len(images):
            raise ValueError(
                f"options val_size + test_size = {self.val_size + self.test_size} leave no "
                f"training images of {len(images)}"
            )
        index = np.arange(len(images))
        rest, test = train_test_split(
            index, test_size=self.test_size, stratify=labels, random_state=self.data_seed
        )
        train, val = train_test_split(
            rest, test_size=self.val_size, stratify=labels[rest], random_state=self.data_seed
        )
        self.split_indices = {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
        x = torch.from_numpy(images / 16.0).float().view(-1, SIDE, SIDE)  # (N, 8, 8)
        y = torch.from_numpy(labels.astype(np.int64))  # (N,)
        return {name: (x[idx], y[idx]) for name, idx in self.split_indices.items()}
