"""SVHN (street-view house numbers, cropped digits), read through torchvision.

On disk: ``ROOT/train_32x32.mat`` and ``ROOT/test_32x32.mat`` (MATLAB files with ``X`` of shape
(32, 32, 3, N) and ``y`` of shape (N, 1), label 10 meaning the digit 0; torchvision maps 10 to 0
and checks each file's MD5). The "extra" set is not used.

Split: ``min(5000, max(1, n // 10))`` images held out of the 73,257 training images with a seeded
random split (68,257/5,000); the 26,032 test images are the test split.

Normalisation: SVHN's own mean (0.4377, 0.4438, 0.4728) and std (0.1980, 0.2010, 0.1970).
Augmentation: random crop with padding 4 and NO horizontal flip (digits are not mirror-symmetric).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from calibench.data.base import DataRequest, DatasetSpec, ImageData, Split, register_dataset
from calibench.data.files import READ_ERRORS, check_labels, explain_read_failure, random_holdout

SVHN_PAGE = "http://ufldl.stanford.edu/housenumbers/"


def load_svhn(request: DataRequest) -> ImageData:
    """Load SVHN's train and test sets with a seeded 5k validation split (labels 0..9)."""
    from torchvision.datasets import svhn

    root = Path(request.root)
    checksums = {svhn.SVHN.split_list[s][1]: svhn.SVHN.split_list[s][2] for s in ("train", "test")}
    how = f"fetch {' and '.join(checksums)} from {SVHN_PAGE} on another machine into {root}"
    try:
        train = svhn.SVHN(root=str(root), split="train", download=request.download)
        test = svhn.SVHN(root=str(root), split="test", download=request.download)
    except READ_ERRORS as exc:
        raise explain_read_failure(
            "svhn",
            root,
            list(checksums),
            exc,
            download=request.download,
            how=how,
            md5_ok=lambda name: bool(svhn.check_integrity(str(root / name), checksums[name])),
            read=_read_mat,
        ) from exc
    train_images, train_labels = _as_tensors(train.data, train.labels)
    test_images, test_labels = _as_tensors(test.data, test.labels)
    check_labels(train_labels, 10, "svhn", root / "train_32x32.mat", how)
    check_labels(test_labels, 10, "svhn", root / "test_32x32.mat", how)
    return random_holdout(
        train_images,
        train_labels,
        Split(test_images, test_labels),
        request,
        [str(k) for k in range(10)],
        "svhn",
    )


def _as_tensors(data: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(np.ascontiguousarray(data, dtype=np.uint8))
    return images, torch.from_numpy(np.asarray(labels, dtype=np.int64).reshape(-1))


def _read_mat(path: Path) -> None:
    import scipy.io

    content = scipy.io.loadmat(str(path))
    x, y = content["X"], content["y"]
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise ValueError(f"'X' has shape {x.shape}, expected (32, 32, 3, N)")
    if y.size != x.shape[3]:
        raise ValueError(f"{y.size} labels for {x.shape[3]} images")


SVHN = register_dataset(
    DatasetSpec(
        name="svhn",
        num_classes=10,
        in_channels=3,
        image_size=32,
        mean=(0.4377, 0.4438, 0.4728),
        std=(0.1980, 0.2010, 0.1970),
        load=load_svhn,
        crop_padding=4,
        hflip=False,
        description="SVHN cropped digits, 68,257 train / 5k val / 26,032 test; torchvision files",
    )
)
