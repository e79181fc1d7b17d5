"""Distribution shift: the official -C layouts in, ordered uint8 splits out; generated
corruptions that are seeded, keep the image format, grow with severity and match hand values and
independent implementations."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
import torch
from fake_datasets import (
    IMAGENET_WNIDS,
    write_fake_cifar_c,
    write_fake_imagenet,
    write_fake_imagenet_c,
    write_fake_tiny_imagenet,
    write_fake_tiny_imagenet_c,
)

from calibench.data.base import DataRequest, Split
from calibench.errors import CalibenchError
from calibench.shift import (
    OFFICIAL_CORRUPTIONS,
    SEVERITIES,
    SHIFTS,
    check_shift,
    shift_corruptions,
    shift_dataset,
    shift_set_name,
    shifted_test_sets,
)
from calibench.shift import corruptions as C

EXTRA = ["speckle_noise", "saturate"]


def clean_split(labels: np.ndarray, shape: tuple[int, int, int] = (3, 32, 32)) -> Split:
    images = torch.zeros((len(labels), *shape), dtype=torch.uint8)
    return Split(images, torch.as_tensor(labels, dtype=torch.int64))


@pytest.fixture
def cifar10_c(tmp_path: Path):
    """A CIFAR-10-C folder: 20 images per severity, the 15 standard and 2 extra corruptions."""
    test_labels = np.arange(20) % 10
    fake = write_fake_cifar_c(tmp_path, [*OFFICIAL_CORRUPTIONS, *EXTRA], test_labels)
    return tmp_path, fake, clean_split(test_labels)


# ------------------------------------------------------------------------ official CIFAR-C


@pytest.mark.parametrize(
    ("name", "dataset", "folder", "k"),
    [
        ("cifar10-c", "cifar10", "CIFAR-10-C", 10),
        ("cifar100-c", "cifar100", "CIFAR-100-C", 100),
    ],
)
def test_cifar_c_yields_each_severity_block_with_its_own_labels(
    tmp_path: Path, name: str, dataset: str, folder: str, k: int
) -> None:
    test_labels = np.random.default_rng(1).integers(0, k, size=20)
    fake = write_fake_cifar_c(tmp_path, [*OFFICIAL_CORRUPTIONS, *EXTRA], test_labels, folder)
    got = list(shifted_test_sets(name, dataset, clean_split(test_labels), tmp_path, seed=0))
    # the extra corruptions come after the standard ones, in the release's order
    expected_order = [*OFFICIAL_CORRUPTIONS, "speckle_noise", "saturate"]
    assert [(c, s) for c, s, _ in got] == [(c, s) for c in expected_order for s in SEVERITIES]
    for corruption, severity, split in got:
        rows = slice((severity - 1) * 20, severity * 20)
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert tuple(split.images.shape) == (20, 3, 32, 32)
        assert np.array_equal(split.images.numpy(), fake.images[corruption][rows])
        assert np.array_equal(split.labels.numpy(), fake.labels[rows])
    assert shift_corruptions(name, dataset, tmp_path) == tuple(expected_order)


def test_cifar_c_splits_are_made_one_at_a_time(cifar10_c) -> None:
    root, fake, clean = cifar10_c
    sets = shifted_test_sets("cifar10-c", "cifar10", clean, root, seed=0)
    corruption, severity, split = next(sets)
    assert (corruption, severity) == ("gaussian_noise", 1)
    assert isinstance(split.images, torch.Tensor) and split.images.is_contiguous()
    # a later file broken after the first split was produced only fails when it is reached
    (root / "CIFAR-10-C" / "saturate.npy").write_bytes(b"\x93NUMPY broken")
    with pytest.raises(CalibenchError, match="saturate.npy"):
        list(sets)


@pytest.mark.parametrize("gone", ["frost.npy", "labels.npy"])
def test_cifar_c_missing_file_says_what_and_where_to_get_it(cifar10_c, gone: str) -> None:
    root, _, clean = cifar10_c
    (root / "CIFAR-10-C" / gone).unlink()
    with pytest.raises(CalibenchError) as info:
        shifted_test_sets("cifar10-c", "cifar10", clean, root, seed=0)
    message = str(info.value)
    assert gone in message and str(root / "CIFAR-10-C") in message
    assert "CIFAR-10-C.tar" in message and "https://zenodo.org/records/2535967" in message
    with pytest.raises(CalibenchError, match=gone):
        check_shift("cifar10-c", "cifar10", data_root=root)


def test_cifar_c_missing_folder_names_the_folder_and_record(tmp_path: Path) -> None:
    with pytest.raises(CalibenchError) as info:
        check_shift("cifar100-c", "cifar100", data_root=tmp_path)
    message = str(info.value)
    assert f"no folder {tmp_path / 'CIFAR-100-C'}" in message
    assert "https://zenodo.org/records/3555552" in message and "CIFAR-100-C.tar" in message


def test_an_absent_extra_corruption_is_skipped(cifar10_c) -> None:
    root, _, clean = cifar10_c
    (root / "CIFAR-10-C" / "saturate.npy").unlink()
    names = [c for c, s, _ in shifted_test_sets("cifar10-c", "cifar10", clean, root, 0) if s == 1]
    assert names == [*OFFICIAL_CORRUPTIONS, "speckle_noise"]


def test_named_corruptions_need_only_their_own_files(tmp_path: Path) -> None:
    test_labels = np.arange(20) % 10
    fake = write_fake_cifar_c(tmp_path, ["fog", "saturate"], test_labels)
    clean = clean_split(test_labels)
    only = ["saturate", "fog"]
    check_shift("cifar10-c", "cifar10", data_root=tmp_path, only=only)
    got = list(shifted_test_sets("cifar10-c", "cifar10", clean, tmp_path, 0, only))
    assert [(c, s) for c, s, _ in got] == [(c, s) for c in ("fog", "saturate") for s in SEVERITIES]
    assert np.array_equal(got[-1][2].images.numpy(), fake.images["saturate"][80:])
    with pytest.raises(CalibenchError, match="contrast.npy"):
        check_shift("cifar10-c", "cifar10", data_root=tmp_path, only=["fog", "contrast"])
    with pytest.raises(CalibenchError, match="gaussian_noise.npy"):
        check_shift("cifar10-c", "cifar10", data_root=tmp_path)
    with pytest.raises(CalibenchError, match="--corruptions fgo: not in cifar10-c. Valid: "):
        check_shift("cifar10-c", "cifar10", data_root=tmp_path, only=["fgo"])


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:5000]), "frost.npy"),
        (lambda p: np.save(p, np.zeros((100, 32, 32), np.uint8)), r"\(100, 32, 32\)"),
        (lambda p: np.save(p, np.zeros((100, 32, 32, 3), np.float32)), "float32"),
        (lambda p: np.save(p, np.zeros((90, 32, 32, 3), np.uint8)), r"\(90, 32, 32, 3\)"),
        (lambda p: p.write_text("not a numpy file"), "frost.npy"),
    ],
)
def test_cifar_c_damaged_file_is_named_before_any_split(cifar10_c, damage, expected) -> None:
    root, _, clean = cifar10_c
    damage(root / "CIFAR-10-C" / "frost.npy")
    with pytest.raises(CalibenchError, match=expected) as info:
        shifted_test_sets("cifar10-c", "cifar10", clean, root, seed=0)
    assert "corrupt, truncated or not from the release" in str(info.value)
    assert "https://zenodo.org/records/2535967" in str(info.value)


def test_cifar_c_labels_outside_the_classes_are_refused(cifar10_c) -> None:
    root, fake, clean = cifar10_c
    labels = fake.labels.astype(np.uint8)
    labels[3] = 10
    np.save(root / "CIFAR-10-C" / "labels.npy", labels)
    with pytest.raises(CalibenchError, match="labels range 0..10, expected 0..9"):
        shifted_test_sets("cifar10-c", "cifar10", clean, root, seed=0)


def test_cifar_c_must_match_the_clean_test_set(cifar10_c) -> None:
    root, _, clean = cifar10_c
    fewer = Split(clean.images[:10], clean.labels[:10])
    with pytest.raises(CalibenchError, match="20 images at severity 1, 10 in the test set"):
        shifted_test_sets("cifar10-c", "cifar10", fewer, root, seed=0)
    other_classes = Split(clean.images, torch.zeros(20, dtype=torch.int64))
    with pytest.raises(CalibenchError, match="does not match the clean cifar10 test set: class 0"):
        shifted_test_sets("cifar10-c", "cifar10", other_classes, root, seed=0)


# ---------------------------------------------------------------------- official Tiny-C


@pytest.fixture
def tiny_c(tmp_path: Path):
    """Tiny-ImageNet (2 classes, wnids.txt in reverse name order) and its -C tree."""
    clean = write_fake_tiny_imagenet(tmp_path, n_classes=2, n_train_per_class=2)
    wnids = (tmp_path / "tiny-imagenet-200" / "wnids.txt").read_text().split()
    fake = write_fake_tiny_imagenet_c(tmp_path, list(OFFICIAL_CORRUPTIONS), wnids)
    test = Split(torch.from_numpy(clean.test_images), torch.from_numpy(clean.test_labels))
    return tmp_path, fake, test, wnids


def test_tiny_imagenet_c_labels_follow_wnids_txt(tiny_c) -> None:
    root, fake, clean, wnids = tiny_c
    assert wnids != sorted(wnids)
    got = list(shifted_test_sets("tiny_imagenet-c", "tiny_imagenet", clean, root, seed=0))
    assert [(c, s) for c, s, _ in got] == [(c, s) for c in OFFICIAL_CORRUPTIONS for s in SEVERITIES]
    for corruption, severity, split in got:
        rows = slice((severity - 1) * 4, severity * 4)
        assert tuple(split.images.shape) == (4, 3, 64, 64)
        assert split.labels.tolist() == [0, 0, 1, 1] == fake.labels[rows].tolist()
        error = split.images.int() - torch.from_numpy(fake.images[corruption][rows]).int()
        assert error.abs().max() <= 4


def test_tiny_imagenet_c_with_only_the_named_corruptions(tmp_path: Path) -> None:
    clean = write_fake_tiny_imagenet(tmp_path, n_classes=2, n_train_per_class=2)
    wnids = (tmp_path / "tiny-imagenet-200" / "wnids.txt").read_text().split()
    write_fake_tiny_imagenet_c(tmp_path, ["snow"], wnids)
    test = Split(torch.from_numpy(clean.test_images), torch.from_numpy(clean.test_labels))
    got = list(shifted_test_sets("tiny_imagenet-c", "tiny_imagenet", test, tmp_path, 0, ["snow"]))
    assert [(c, s) for c, s, _ in got] == [("snow", s) for s in SEVERITIES]
    with pytest.raises(CalibenchError, match="fog/1/"):
        check_shift("tiny_imagenet-c", "tiny_imagenet", data_root=tmp_path, only=["fog"])
    with pytest.raises(CalibenchError, match="--corruptions saturate: not in tiny_imagenet-c"):
        check_shift("tiny_imagenet-c", "tiny_imagenet", only=["saturate"])


def test_tiny_imagenet_c_missing_severity_folder(tiny_c) -> None:
    root, _, clean, _ = tiny_c
    target = root / "Tiny-ImageNet-C" / "fog" / "3"
    for path in sorted(target.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    target.rmdir()
    with pytest.raises(CalibenchError) as info:
        shifted_test_sets("tiny_imagenet-c", "tiny_imagenet", clean, root, seed=0)
    message = str(info.value)
    assert "fog/3/" in message and "https://zenodo.org/records/2536630" in message
    assert "Tiny-ImageNet-C.tar" in message


def test_tiny_imagenet_c_missing_class_folder(tiny_c) -> None:
    root, _, clean, wnids = tiny_c
    target = root / "Tiny-ImageNet-C" / "snow" / "2" / wnids[1]
    for path in target.iterdir():
        path.unlink()
    target.rmdir()
    with pytest.raises(CalibenchError, match=f"{wnids[1]}/ missing in .*snow/2"):
        check_shift("tiny_imagenet-c", "tiny_imagenet", data_root=root)


def test_tiny_imagenet_c_needs_wnids_txt(tiny_c) -> None:
    root, _, clean, _ = tiny_c
    (root / "tiny-imagenet-200" / "wnids.txt").unlink()
    with pytest.raises(CalibenchError, match="wnids.txt, which is missing"):
        shifted_test_sets("tiny_imagenet-c", "tiny_imagenet", clean, root, seed=0)


def test_tiny_imagenet_c_unreadable_jpeg_names_the_file_and_record(tiny_c) -> None:
    root, _, clean, wnids = tiny_c
    bad = root / "Tiny-ImageNet-C" / "gaussian_noise" / "2" / wnids[0] / "val_1.JPEG"
    bad.write_bytes(b"not a jpeg")
    sets = shifted_test_sets("tiny_imagenet-c", "tiny_imagenet", clean, root, seed=0)
    next(sets)
    with pytest.raises(CalibenchError) as info:
        next(sets)
    message = str(info.value)
    assert str(bad) in message and "https://zenodo.org/records/2536630" in message
    assert "--download" not in message


# ----------------------------------------------------------------------------- ImageNet-C


@pytest.fixture
def imagenet_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A 3-class ImageNet (registered as ``imagenet``, 16 px crops) and its -C folders for fog
    and contrast, 2 images per class and severity, as the clean val set has."""
    from calibench.data.imagenet import imagenet_dataset, load_imagenet
    from calibench.registry import DATASETS

    spec = imagenet_dataset("imagenet", num_classes=3, crop_size=16, resize_size=20)
    monkeypatch.setitem(DATASETS._entries, "imagenet", spec)
    write_fake_imagenet(tmp_path)
    fake = write_fake_imagenet_c(tmp_path, ["fog", "contrast"])
    clean = load_imagenet(DataRequest(tmp_path), num_classes=3).test
    return tmp_path, fake, clean, spec


def test_imagenet_c_splits_follow_the_clean_classes_and_are_used_uncropped(imagenet_c) -> None:
    from calibench.data import FileSplit, LoaderConfig, make_loader

    root, fake, clean, spec = imagenet_c
    only = ["fog", "contrast"]
    got = list(shifted_test_sets("imagenet-c", "imagenet", clean, root, 0, only))
    assert [(c, s) for c, s, _ in got] == [(c, s) for c in ("fog", "contrast") for s in SEVERITIES]
    corruption, severity, split = got[4]
    assert isinstance(split, FileSplit) and split.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert split.path(2).endswith(
        f"ImageNet-C/fog/5/{IMAGENET_WNIDS[1]}/{IMAGENET_WNIDS[1]}_0.JPEG"
    )
    dataset = shift_dataset("imagenet-c", spec)
    assert dataset.stream.resize_size == dataset.stream.crop_size == 16
    loader = make_loader(LoaderConfig(split, dataset, 4, torch.device("cpu"), workers=0))
    x = torch.cat([batch for batch, _ in loader])
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(spec.std).view(1, 3, 1, 1) * 255
    pixels = torch.from_numpy(fake.images["fog"][24:]).float()
    torch.testing.assert_close(x, (pixels - mean) / std)
    assert shift_dataset("cifar10-c", spec) is spec


def test_imagenet_c_checks_its_folders_before_any_split(imagenet_c) -> None:
    root, _, clean, _ = imagenet_c
    with pytest.raises(CalibenchError, match="gaussian_noise/1/.*zenodo.org/records/2235448"):
        check_shift("imagenet-c", "imagenet", data_root=root)
    check_shift("imagenet-c", "imagenet", data_root=root, only=["fog"])
    folder = root / "ImageNet-C" / "fog" / "4" / IMAGENET_WNIDS[2]
    (folder / f"{IMAGENET_WNIDS[2]}_1.JPEG").unlink()
    sets = shifted_test_sets("imagenet-c", "imagenet", clean, root, 0, ["fog"])
    with pytest.raises(CalibenchError, match="5 images at severity 4, 6 in the test set"):
        list(sets)
    folder.rename(folder.with_name("n99999999"))
    with pytest.raises(CalibenchError, match="class folders n99999999 are not classes"):
        shifted_test_sets("imagenet-c", "imagenet", clean, root, 0, ["fog"])
    with pytest.raises(CalibenchError, match="streamed from files"):
        check_shift("corrupt", "imagenet")


# -------------------------------------------------------------------------------- the API


def test_shift_names_and_set_names() -> None:
    assert SHIFTS == ("cifar10-c", "cifar100-c", "tiny_imagenet-c", "imagenet-c", "corrupt")
    assert SEVERITIES == (1, 2, 3, 4, 5)
    assert shift_set_name("cifar10-c", "cifar10") == "cifar10-c"
    assert shift_set_name("corrupt", "fashion_mnist") == "fashion_mnist-c-calibench"
    with pytest.raises(CalibenchError, match="unknown shift 'imagenet-v2'. Valid shifts: cifar"):
        check_shift("imagenet-v2", "cifar10")


@pytest.mark.parametrize(
    ("dataset", "described"), [("fashion_mnist", "1x28x28, 10 classes"), ("svhn", "3x32x32")]
)
def test_official_set_refuses_another_dataset(dataset: str, described: str) -> None:
    with pytest.raises(CalibenchError) as info:
        check_shift("cifar10-c", dataset)
    message = str(info.value)
    assert described in message and "3x32x32, 10 classes" in message
    assert "--shift corrupt" in message and "cifar10" in message


def test_generated_shift_fits_any_in_memory_dataset() -> None:
    for dataset in ("digits", "mnist", "fashion_mnist", "svhn", "cifar10", "tiny_imagenet"):
        check_shift("corrupt", dataset)
    with pytest.raises(CalibenchError, match="streamed from files. Use .*--shift imagenet-c"):
        check_shift("corrupt", "imagenet")
    with pytest.raises(CalibenchError, match="unknown dataset 'no_such_set'"):
        check_shift("corrupt", "no_such_set")
    assert "saturate" not in shift_corruptions("corrupt", "fashion_mnist", Path("unused"))
    assert shift_corruptions("corrupt", "svhn", Path("unused"))[-1] == "saturate"


def test_generated_sets_are_seeded_ordered_and_keep_labels(tmp_path: Path) -> None:
    clean = Split(smooth_images(6, 1, 8), torch.arange(6) % 3)
    first = list(shifted_test_sets("corrupt", "digits", clean, tmp_path, seed=3))
    again = list(shifted_test_sets("corrupt", "digits", clean, tmp_path, seed=3))
    other = list(shifted_test_sets("corrupt", "digits", clean, tmp_path, seed=4))
    names = C.corruption_names(1)
    assert [(c, s) for c, s, _ in first] == [(c, s) for c in names for s in SEVERITIES]
    for (c, s, a), (_, _, b), (_, _, d) in zip(first, again, other, strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, clean.labels)
        assert torch.equal(a.images, C.corrupt_split(clean, c, s, seed=3).images)
        if c in ("gaussian_noise", "shot_noise", "speckle_noise", "motion_blur"):
            assert not torch.equal(a.images, d.images)


# ------------------------------------------------------------------- generated corruptions


def smooth_images(n: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """Seeded images with structure at a few pixels' scale, spanning the whole 0..255 range."""
    noise = torch.rand((n, channels, size, size), generator=torch.Generator().manual_seed(seed))
    return C.to_uint8((C.gaussian_filter(noise, 1.0, 4.0, "nearest") - 0.5) * 3 + 0.5)


def distortion(images: torch.Tensor, corruption: str) -> list[float]:
    """Mean absolute difference to the clean images per severity, as corrupt_split makes them."""
    split = Split(images, torch.zeros(len(images), dtype=torch.int64))
    return [
        (C.corrupt_split(split, corruption, s, seed=0).images.float() - images.float())
        .abs()
        .mean()
        .item()
        for s in SEVERITIES
    ]


SHAPES = [(1, 8), (1, 28), (3, 32)]


@pytest.mark.parametrize(("channels", "size"), SHAPES)
def test_every_corruption_keeps_the_format_and_is_deterministic(channels: int, size: int) -> None:
    images = smooth_images(4, channels, size)
    for name in C.corruption_names(channels):
        for severity in (1, 5):
            out = C.corrupt(images, name, severity, torch.Generator().manual_seed(7))
            same = C.corrupt(images, name, severity, torch.Generator().manual_seed(7))
            assert out.dtype == torch.uint8 and out.shape == images.shape, name
            assert torch.equal(out, same), name


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_distortion_grows_with_severity(channels: int, size: int) -> None:
    images = smooth_images(16, channels, size)
    for name in C.corruption_names(channels):
        d = distortion(images, name)
        if name == "elastic_transform":
            continue  # see test_elastic_warp_follows_its_table
        if name == "saturate":
            # the table desaturates (x0.3, x0.1), then saturates (x1.5, x2 + 0.1, x2.5 + 0.2)
            assert d[0] < d[1] and d[2] < d[3] < d[4], (name, d)
        elif name == "motion_blur":
            # severities 3 and 4 share sigma 2; the longer kernel adds taps of weight < 1e-7
            assert d[0] < d[1] < d[2] and d[3] < d[4] and abs(d[3] - d[2]) < 0.05 * d[2], d
        else:
            assert all(a < b for a, b in zip(d, d[1:], strict=False)), (name, d)


def test_distortion_never_falls_on_8_pixel_images() -> None:
    images = smooth_images(16, 1, 8)
    for name in C.corruption_names(1):
        if name == "elastic_transform":
            continue
        d = distortion(images, name)
        assert d[4] > d[0] and all(b >= 0.95 * a for a, b in zip(d, d[1:], strict=False)), (name, d)
    # pixelate's int(8 c) sizes are 7, 7, 6, 6, 5: equal severities give equal images
    d = distortion(images, "pixelate")
    assert d[0] == d[1] and d[2] == d[3]


def test_elastic_warp_follows_its_table() -> None:
    """Affine jitter shrinks (0.08 -> 0.03 of the size) while the elastic field grows."""
    affine_shift, field_size = [], []
    for severity in SEVERITIES:
        affine, field = C.elastic_warp(100, 32, 32, severity, torch.Generator().manual_seed(0))
        affine_shift.append((affine - C.pixel_grid(32, 32)).norm(dim=-1).mean().item())
        field_size.append(field.norm(dim=-1).mean().item())
    assert all(a > b for a, b in zip(affine_shift, affine_shift[1:], strict=False))
    assert field_size[0] == 0 and all(
        a < b for a, b in zip(field_size, field_size[1:], strict=False)
    )


def test_brightness_and_contrast_hand_values() -> None:
    rgb = torch.tensor([[200, 80, 0], [240, 96, 48], [0, 0, 0]], dtype=torch.uint8)
    image = rgb.T.reshape(1, 3, 3, 1)
    out = C.corrupt(image, "brightness", 4, torch.Generator())  # value + 0.2 (51 levels)
    assert out.reshape(3, 3).T.tolist() == [[251, 100, 0], [255, 102, 51], [51, 51, 51]]
    gray = torch.tensor([100, 250], dtype=torch.uint8).reshape(1, 1, 1, 2)
    out = C.corrupt(gray, "brightness", 1, torch.Generator())  # + 0.05 (12.75 levels)
    assert out.flatten().tolist() == [113, 255]
    gray = torch.tensor([0, 100, 200, 100], dtype=torch.uint8).reshape(1, 1, 2, 2)
    out = C.corrupt(gray, "contrast", 1, torch.Generator())  # (x - 100) * 0.75 + 100
    assert out.flatten().tolist() == [25, 100, 175, 100]
    out = C.corrupt(gray, "contrast", 5, torch.Generator())  # (x - 100) * 0.15 + 100
    assert out.flatten().tolist() == [85, 100, 115, 100]


@pytest.mark.parametrize("severity", SEVERITIES)
def test_brightness_and_saturate_match_an_hsv_round_trip(severity: int) -> None:
    pixels = torch.rand((200, 3), generator=torch.Generator().manual_seed(severity))
    pixels[:20] = pixels[:20, :1]  # gray pixels: no saturation, hue 0
    pixels[20] = 0.0
    image = pixels.T.reshape(1, 3, 200, 1)
    got_v = C.brightness(image, severity, torch.Generator()).reshape(3, 200).T
    got_s = C.saturate(image, severity, torch.Generator()).reshape(3, 200).T
    c = C.BRIGHTNESS[severity - 1]
    a, b = C.SATURATE[severity - 1]
    for p, v, s in zip(pixels.tolist(), got_v.tolist(), got_s.tolist(), strict=True):
        h, sat, val = colorsys.rgb_to_hsv(*p)
        assert v == pytest.approx(colorsys.hsv_to_rgb(h, sat, min(val + c, 1.0)), abs=1e-5)
        expected = colorsys.hsv_to_rgb(h, min(max(sat * a + b, 0.0), 1.0), val)
        assert s == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_noise_statistics(severity: int) -> None:
    x = torch.full((1, 1, 200, 200), 0.5)
    g = torch.Generator().manual_seed(severity)
    noise = C.gaussian_noise(x, severity, g) - x
    assert noise.std().item() == pytest.approx(C.GAUSSIAN_NOISE[severity - 1], rel=0.03)
    speckle = C.speckle_noise(x, severity, g) - x
    assert speckle.std().item() == pytest.approx(0.5 * C.SPECKLE_NOISE[severity - 1], rel=0.03)
    shot = C.shot_noise(x, severity, g)
    rate = C.SHOT_NOISE[severity - 1]
    assert shot.mean().item() == pytest.approx(0.5, abs=0.002)
    assert shot.var().item() == pytest.approx(0.5 / rate, rel=0.05)
    impulse = C.impulse_noise(x, severity, g)
    amount = C.IMPULSE_NOISE[severity - 1]
    assert (impulse == 0).float().mean().item() == pytest.approx(amount / 2, rel=0.15)
    assert (impulse == 1).float().mean().item() == pytest.approx(amount / 2, rel=0.15)
    assert ((impulse == 0.5) | (impulse == 0) | (impulse == 1)).all()


@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_blur_matches_scipy(severity: int) -> None:
    for size in (8, 64):  # 64 px images blur twice as wide
        x = torch.rand((2, 3, size, size), generator=torch.Generator().manual_seed(severity))
        got = C.gaussian_blur(x, severity, torch.Generator())
        sigma = C.GAUSSIAN_BLUR[severity - 1] * max(1, size / 32)
        want = scipy.ndimage.gaussian_filter(
            x.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=4.0
        )
        np.testing.assert_allclose(got.numpy(), want, atol=1e-5)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_defocus_blur_matches_scipy_with_its_disk(severity: int) -> None:
    x = torch.rand((2, 1, 20, 20), generator=torch.Generator().manual_seed(severity))
    got = C.defocus_blur(x, severity, torch.Generator())
    kernel = C.disk_kernel(*C.DEFOCUS_BLUR[severity - 1]).numpy()
    want = scipy.ndimage.convolve(x.numpy(), kernel[None, None], mode="mirror")
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)


def test_disk_kernel_hand_values() -> None:
    # radius 0.3 keeps the centre only: the kernel is the 3x3 Gaussian of sigma 0.4
    g = np.exp(-1 / (2 * 0.4**2))
    one = np.array([g, 1.0, g]) / (1 + 2 * g)
    k = C.disk_kernel(0.3, 0.4).numpy()
    assert k.shape == (5, 5) and k.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(k[1:4, 1:4], np.outer(one, one), atol=1e-6)
    assert np.count_nonzero(k > 1e-9) == 9
    # radius 1 is the centre and its 4 neighbours, 1/5 each; sigma 0.2 barely spreads them
    k = C.disk_kernel(1.0, 0.2).numpy()
    plus = np.zeros((5, 5))
    plus[2, 1:4] = plus[1:4, 2] = 0.2
    np.testing.assert_allclose(k, plus, atol=1e-4)


@pytest.mark.parametrize(("channels", "size"), [(1, 8), (1, 28), (3, 32)])
def test_pixelate_matches_pil_box_resizing(channels: int, size: int) -> None:
    from PIL import Image

    images = smooth_images(3, channels, size)
    for severity in SEVERITIES:
        got = C.corrupt(images, "pixelate", severity, torch.Generator())
        small = int(size * C.PIXELATE[severity - 1])
        for image, result in zip(images, got, strict=True):
            array = image.permute(1, 2, 0).numpy().squeeze()
            pil = Image.fromarray(array).resize((small, small), Image.BOX)
            pil = np.asarray(pil.resize((size, size), Image.BOX))
            out = result.permute(1, 2, 0).numpy().squeeze()
            assert np.abs(out.astype(int) - pil.astype(int)).max() <= 1


def test_geometric_corruptions_keep_a_constant_image() -> None:
    flat = torch.full((2, 3, 16, 16), 77, dtype=torch.uint8)
    for name in ("defocus_blur", "motion_blur", "zoom_blur", "gaussian_blur", "pixelate"):
        for severity in SEVERITIES:
            assert torch.equal(C.corrupt(flat, name, severity, torch.Generator()), flat), name
    x = torch.rand(2, 1, 9, 9, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(C.zoom(x, 1.0), x, atol=1e-6)


def test_zoom_factors_follow_the_released_ranges() -> None:
    assert C.zoom_factors(1) == pytest.approx([1.0 + k / 100 for k in range(7)])
    assert len(C.zoom_factors(5)) == 26 and C.zoom_factors(5)[-1] == pytest.approx(1.25)


@pytest.mark.parametrize(
    ("mode", "numpy_mode"), [("nearest", "edge"), ("reflect", "symmetric"), ("mirror", "reflect")]
)
def test_edge_rules_match_numpy_pad(mode: str, numpy_mode: str) -> None:
    for n, pad in ((5, 2), (4, 9)):
        want = np.pad(np.arange(n), pad, mode=numpy_mode)
        assert C.edge_index(n, pad, pad, mode).tolist() == want.tolist()


def test_corrupt_refuses_bad_arguments() -> None:
    images = torch.zeros((1, 1, 8, 8), dtype=torch.uint8)
    with pytest.raises(ValueError, match="severity must be 1..5"):
        C.corrupt(images, "contrast", 6, torch.Generator())
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        C.corrupt(images, "fog", 1, torch.Generator())
    with pytest.raises(ValueError, match="saturate needs 3 channels"):
        C.corrupt(images, "saturate", 1, torch.Generator())
