"""calibench bench --against reference: the reference data path, the JSON document, FLOPs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from calibench.bench.measure import MemoryProbe, count_flops, peak_tflops_for
from calibench.bench.reference import reference_loader
from calibench.cli import main
from calibench.data import DeviceLoader, LoaderConfig
from calibench.data.base import Split
from calibench.registry import DATASETS


def _random_split(n: int, channels: int, size: int, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    return Split(images, torch.randint(0, 10, (n,), generator=g))


@pytest.mark.parametrize("dataset", ["fashion_mnist", "cifar10"])
def test_reference_batches_are_normalised_as_calibench_normalises(dataset):
    spec = DATASETS.get(dataset)
    split = _random_split(24, spec.in_channels, spec.image_size)
    cpu = torch.device("cpu")
    loader = reference_loader(split, spec, 8, cpu, num_workers=0, train=False)
    x, y, positions = next(iter(loader))
    assert torch.equal(positions, torch.arange(8))
    size = spec.image_size
    assert x.dtype == torch.float32 and x.shape == (8, spec.in_channels, size, size)
    assert y.dtype == torch.int64 and torch.equal(y, split.labels[:8])
    ours = DeviceLoader(LoaderConfig(split, spec, 8, cpu))
    torch.testing.assert_close(x, ours.normalise(split.images[:8]), rtol=1e-5, atol=1e-5)


def test_reference_training_batches_are_padded_crops_or_their_mirror_images():
    spec = DATASETS.get("cifar10")
    split = _random_split(16, 3, 32)
    split.labels = torch.arange(16)  # a label names its source image
    loader = reference_loader(split, spec, 16, torch.device("cpu"), num_workers=0, seed=1)
    x, y, positions = next(iter(loader))
    assert torch.equal(y, positions)
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    pixels = torch.round((x * std + mean) * 255)
    p = spec.crop_padding
    padded = F.pad(split.images.float(), (p,) * 4)
    moved = 0
    for image, source in zip(pixels, y.tolist(), strict=True):
        crops = [
            crop
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
            for crop in [padded[source, :, dy : dy + 32, dx : dx + 32]]
            for crop in (crop, crop.flip(-1))
        ]
        assert any(torch.equal(image, c) for c in crops)
        moved += not torch.equal(image, split.images[source].float())
    assert moved > 8  # 1 in 162 crops is the identity


def test_flop_count_of_a_linear_layer_is_the_hand_count():
    batch, n_in, n_out = 5, 7, 3
    layer = torch.nn.Linear(n_in, n_out)
    x, y = torch.randn(batch, n_in), torch.randint(0, n_out, (batch,))
    flops = count_flops(lambda: F.cross_entropy(layer(x), y).backward())
    # forward x @ W^T and the weight gradient, 2 FLOPs per multiply-add; x needs no gradient
    assert flops == 2 * (2 * batch * n_in * n_out)


def test_flop_count_of_two_layers_includes_the_input_gradient_of_the_second():
    batch, n_in, hidden, n_out = 4, 6, 5, 3
    net = torch.nn.Sequential(
        torch.nn.Linear(n_in, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n_out)
    )
    x, y = torch.randn(batch, n_in), torch.randint(0, n_out, (batch,))
    flops = count_flops(lambda: F.cross_entropy(net(x), y).backward())
    assert flops == 2 * batch * (2 * n_in * hidden + 3 * hidden * n_out)


@pytest.mark.parametrize(
    "name, mode, peak",
    [
        ("NVIDIA H200", "bf16", 989.5),
        ("NVIDIA H200 NVL", "bf16", 835.5),
        ("NVIDIA H100 80GB HBM3", "tf32", 494.5),
        ("NVIDIA H100 PCIe", "fp32", 51.0),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312.0),
        ("NVIDIA L40S", "bf16", 362.05),
        ("NVIDIA L4", "bf16", 121.0),
        ("NVIDIA L40", "bf16", None),
        ("Tesla T4", "fp32", None),
    ],
)
def test_peak_table_matches_whole_words_most_specific_first(name, mode, peak):
    assert peak_tflops_for(name, mode) == peak


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_cpu_memory_probe_sees_a_block_allocation():
    probe = MemoryProbe(torch.device("cpu"))
    probe.start()
    block = torch.ones(64 * 2**20 // 4)
    del block
    peak = probe.peak()
    assert peak is None or peak >= 60 * 2**20


def test_json_document_has_the_documented_keys_and_a_positive_ratio(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "--against", "reference", "--methods", "ce,rankmixup_mrl", "--steps", "2"]
    argv += ["--blocks", "1", "--batch-size", "16", "--device", "cpu", "--num-workers", "1"]
    assert main([*argv, "--json", "--output", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    for key in ("date", "device_name", "torch", "batch_size", "steps_per_block", "blocks"):
        assert key in printed
    assert printed["data"] == "real" and printed["dataset"] == "digits"
    assert [m["method"] for m in printed["methods"]] == ["ce", "rankmixup_mrl"]
    ce, mrl = printed["methods"]
    for entry in (ce, mrl):
        assert entry["ratio"] > 0 and entry["flops_per_step"] > 0
        for path in ("calibench", "reference"):
            stats = entry[path]
            assert stats["images_per_s"] > 0
            assert {"peak_memory_bytes", "mfu", "flops_per_s", "step_ms"} <= stats.keys()
            assert stats["mfu"] is None  # CPU: no peak, no MFU
    # MRL runs the raw batch and its mixed copy: twice the model FLOPs of CE
    assert mrl["flops_per_step"] == pytest.approx(2 * ce["flops_per_step"], rel=0.01)


def test_reference_only_flags_without_against_are_an_error(capsys):
    assert main(["bench", "--methods", "ce", "--json"]) == 2
    assert "--against reference" in capsys.readouterr().err


def test_synthetic_data_when_the_dataset_is_absent(tmp_path, capsys):
    argv = ["bench", "--against", "reference", "--methods", "ce", "--dataset", "cifar10"]
    argv += ["--steps", "1", "--blocks", "1", "--batch-size", "8", "--device", "cpu"]
    argv += ["--num-workers", "0", "--data-root", str(tmp_path), "--json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["data"] == "synthetic" and doc["train_images"] >= 8
