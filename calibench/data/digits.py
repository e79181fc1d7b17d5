"""scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), embedded in the wheel.

Split: a fixed seeded 20% test set, then 15% of the rest as validation. Pixel values 0..16 are
scaled to 0..255 so every dataset is stored as uint8.
"""

from __future__ import annotations

import numpy as np
import torch

from calibench.data.base import DataRequest, DatasetSpec, ImageData, Split, register_dataset

N_TEST = 360
N_VAL = 216
TEST_SPLIT_SEED = 12345


def load_digits_data(request: DataRequest) -> ImageData:
    """Load the digits with the fixed test split and a ``request.split_seed`` validation split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    perm = np.random.default_rng(TEST_SPLIT_SEED).permutation(len(labels))
    test_idx, pool = np.sort(perm[:N_TEST]), np.sort(perm[N_TEST:])
    val_pos = np.random.default_rng(request.split_seed).permutation(len(pool))[:N_VAL]
    val_idx = np.sort(pool[val_pos])
    train_idx = np.setdiff1d(pool, val_idx)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)

    def take(idx: np.ndarray) -> Split:
        return Split(x[torch.from_numpy(idx)], y[torch.from_numpy(idx)])

    return ImageData(
        train=take(train_idx),
        val=take(val_idx),
        test=take(test_idx),
        train_indices=train_idx,
        val_indices=val_idx,
        class_names=[str(k) for k in range(10)],
    )


DIGITS = register_dataset(
    DatasetSpec(
        name="digits",
        num_classes=10,
        in_channels=1,
        image_size=8,
        mean=(0.3075,),
        std=(0.3740,),
        load=load_digits_data,
        description="scikit-learn 8x8 digits, 1,221 train / 216 val / 360 test; offline",
    )
)
