"""One run over several processes (DDP, gloo on the CPU) and the streamed ImageNet dataset.

The multi-process checks share one launch of two forked processes (module fixture ``ranks``)
that join a gloo group through the same environment variables torchrun sets, then: compute
DDP gradients, train the digits through the runner, and run the ``calibench run`` command on a
fake ImageNet for two seeds, the second of which kills rank 0 in its second epoch. One test
starts the command through ``python -m torch.distributed.run`` itself.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import tiny_spec
from torch import nn

from calibench import CalibenchError, get_method
from calibench.cli import main as cli_main
from calibench.data import (
    DataRequest,
    DatasetSpec,
    DeviceLoader,
    LoaderConfig,
    Split,
    StreamLoader,
    load_dataset,
)
from calibench.data.imagenet import imagenet_dataset, load_imagenet
from calibench.data.stream import eval_view, random_resized_crop_box, train_view
from calibench.evaluation.predict import predict_logits
from calibench.evaluation.record import evaluate_logits
from calibench.models import build_backbone
from calibench.plugins import load_plugin_dir
from calibench.registry import DATASETS
from calibench.spec import RunSpec
from calibench.store.index import Store
from calibench.training import distributed
from calibench.training.checkpoints import _rank_rng_states
from calibench.training.loop import prepare
from calibench.training.runner import run_one

WNIDS = ["n01440764", "n01443537", "n01484850"]
PLUGIN = '''
import os
import signal

import torch.nn.functional as F

from calibench import Loss, Method, register_method
from calibench.training import distributed
from calibench.data import register_dataset
from calibench.data.imagenet import imagenet_dataset

register_dataset(imagenet_dataset("imagenet_test", num_classes=3, crop_size=16, resize_size=20))
CALLS = [0]


@register_method("ce_killed")
class CEKilled(Method):
    """Cross-entropy; rank 0 kills its own process at the loss call $DIE_AT_CALL."""

    def loss(self, model, x, y):
        CALLS[0] += 1
        if distributed.rank() == 0 and str(CALLS[0]) == os.environ.get("DIE_AT_CALL"):
            os.kill(os.getpid(), signal.SIGKILL)
        ce = F.cross_entropy(model(x), y)
        return Loss(ce, {"ce": ce})
'''
STEPS_PER_EPOCH = 3
"""Fake ImageNet: 3 classes x 6 training images, 1 per class held out: 15 // batch 4 = 3."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_fake_imagenet(root: Path, train_per_class: int = 6, val_per_class: int = 2) -> None:
    """ImageFolder layout: imagenet/{train,val}/<wnid>/*.JPEG, images of 32x40 or 40x32 whose
    channel k is bright for class k. One training file is a grayscale JPEG, one a CMYK JPEG and
    one a PNG named .JPEG, as the real training set has."""
    from PIL import Image
    from torchvision.io import encode_png, write_file, write_jpeg

    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for k, wnid in enumerate(WNIDS):
            folder = root / "imagenet" / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = (32, 40) if i % 2 else (40, 32)
                image = torch.from_numpy(rng.integers(0, 128, (3, h, w), dtype=np.uint8))
                image[k] += 127
                path = folder / f"{wnid}_{i}.JPEG"
                if split == "train" and (k, i) == (0, 1):
                    write_jpeg(image[:1], str(path))
                elif split == "train" and (k, i) == (1, 2):
                    write_file(str(path), encode_png(image))
                elif split == "train" and (k, i) == (2, 3):
                    rgb = Image.fromarray(image.permute(1, 2, 0).numpy())
                    rgb.convert("CMYK").save(path, format="JPEG")
                else:
                    write_jpeg(image, str(path), quality=95)


def cli_args(tmp: Path, seeds: str, method: str = "ce_killed") -> list[str]:
    return [
        "run",
        "--datasets=imagenet_test",
        "--backbones=small_cnn",
        f"--methods={method}",
        f"--seeds={seeds}",
        "--epochs=2",
        "--set=training.batch_size=4",
        "--set=training.eval_batch_size=5",
        f"--data-root={tmp / 'data'}",
        f"--plugins={tmp / 'plugins'}",
        f"--output={tmp / 'out'}",
        "--device=cpu",
    ]


class MLP(nn.Sequential):
    """A BN-free net: DDP over shards then equals one process on the whole batch."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))


def gradient_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)


def loss_gradients(model: nn.Module, method: str, x, y, seed: int, net=None) -> list:
    m = get_method(method)
    m.seed(seed)
    m.loss(net if net is not None else model, x, y).total.backward()
    return [p.grad.clone() for p in model.parameters()]


CRL_SAMPLES = 16


def crl_history(rank: int, world: int, all_reduce_sum=None) -> torch.Tensor:
    """CRL's correctness counts after two epochs of four global batches of four samples, this
    process stepping through its shard of each batch (rank 0 of 1: the whole batch) with one
    fixed BN-free net, so that its predictions do not depend on the sharding. Half the labels
    are the net's own predictions, so that the history is not all zeros."""
    from calibench import TrainingSetup

    model = MLP()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(CRL_SAMPLES, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (CRL_SAMPLES,), generator=g)
    with torch.no_grad():
        y[::2] = model(x[::2]).argmax(dim=-1)
    method = get_method("crl")
    method.setup(TrainingSetup(CRL_SAMPLES, 10, all_reduce_sum))
    for epoch in (1, 2):
        for batch in torch.randperm(CRL_SAMPLES, generator=g).view(4, 4):
            mine = distributed.shard(batch, rank, world)
            method.loss(model, x[mine], y[mine], mine)
        method.on_epoch_end(epoch, None, None)
    return method.correct_counts


def _rank_main(rank: int, world: int, port: int, tmp: Path) -> None:
    """One rank of the shared launch (see the module docstring)."""
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        CALIBENCH_WORKERS="0",
        DIE_AT_CALL=str(2 * STEPS_PER_EPOCH + STEPS_PER_EPOCH + 1),
    )
    with distributed.process_group(torch.device("cpu")):
        x, y = gradient_batch()
        grads = {}
        for method in ("ce", "rankmixup_mndcg"):
            model = MLP()
            net = distributed.wrap_model(model, torch.device("cpu"))
            seed = distributed.method_seed(1, rank)
            grads[method] = loss_gradients(model, method, x[rank::world], y[rank::world], seed, net)
        torch.save(grads, tmp / f"grads{rank}.pt")
        crl = prepare(tiny_spec("crl", epochs=1)).method
        wired = crl.sum_over_processes is distributed.all_reduce_sum
        counts = crl_history(rank, world, crl.sum_over_processes)
        torch.save({"counts": counts, "wired": wired}, tmp / f"crl{rank}.pt")
        try:
            distributed.wrap_model(MLP(), torch.device("cpu"), sync_bn=True)
        except CalibenchError as exc:
            (tmp / f"sync_bn{rank}.txt").write_text(str(exc))
        run_one(tiny_spec("rankmixup_mrl", epochs=1), Store(tmp / "digits"))
        cli_main(cli_args(tmp, "0,1"))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """The shared two-process launch; its folder holds what the ranks left behind."""
    tmp = tmp_path_factory.mktemp("ddp")
    write_fake_imagenet(tmp / "data")
    (tmp / "plugins").mkdir()
    (tmp / "plugins" / "fake_imagenet.py").write_text(PLUGIN)
    load_plugin_dir(tmp / "plugins")
    with pytest.raises(mp.ProcessExitedException, match="signal SIGKILL"):
        mp.start_processes(_rank_main, (2, free_port(), tmp), nprocs=2, start_method="fork")
    return tmp


def single_thread_evaluation(run_dir: Path, spec: RunSpec, data, loader_cls) -> dict:
    """Metrics of ``best.pt`` evaluated in this one process (one thread, as the ranks ran)."""
    dataset = DATASETS.get(spec.dataset)
    model = build_backbone(
        spec.backbone, dataset.num_classes, dataset.in_channels, dataset.image_size
    )
    model.load_state_dict(torch.load(run_dir / "best.pt", weights_only=True))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        batch, device = spec.training.eval_batch_size, torch.device("cpu")
        logits = {
            f"{name}_logits": predict_logits(
                model, loader_cls(LoaderConfig(split, dataset, batch, device))
            )
            for name, split in (("val", data.val), ("test", data.test))
        }
    finally:
        torch.set_num_threads(threads)
    logits.update(val_labels=data.val.labels.numpy(), test_labels=data.test.labels.numpy())
    return evaluate_logits(logits, spec.training.temperature_fit, spec.training.n_bins)


def stored_run(out: Path, seed: int) -> tuple[Path, RunSpec]:
    (run_dir,) = [p for p in (out / "runs").glob(f"*/*/*/seed{seed}-*") if p.is_dir()]
    return run_dir, RunSpec.from_dict(json.loads((run_dir / "config.json").read_text()))


def log_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "log.csv") as fh:
        return list(csv.DictReader(fh))


# --- sharding rules and loaders (one process) ---


def test_shards_partition_every_global_batch():
    positions = torch.arange(12)
    parts = [distributed.shard(positions, r, 3) for r in range(3)]
    assert sorted(torch.cat(parts).tolist()) == list(range(12))
    assert parts[1].tolist() == [1, 4, 7, 10]
    assert distributed.local_batch_size(256, 8) == 32
    with pytest.raises(CalibenchError, match="multiple of 3"):
        distributed.local_batch_size(128, 3)


def test_sharded_device_loader_batches_are_the_single_process_batches():
    g = torch.Generator().manual_seed(0)
    split = Split(
        torch.randint(0, 256, (20, 3, 6, 6), generator=g, dtype=torch.uint8), torch.arange(20)
    )
    spec = DatasetSpec("toy", 20, 3, 6, (0.5,) * 3, (0.25,) * 3, lambda r: None, 2, True)
    cpu = torch.device("cpu")
    whole = DeviceLoader(LoaderConfig(split, spec, 8, cpu, True, torch.Generator().manual_seed(1)))
    shards = [
        DeviceLoader(
            LoaderConfig(split, spec, 8, cpu, True, torch.Generator().manual_seed(1), r, 2)
        )
        for r in range(2)
    ]
    for _ in range(2):
        batches = list(zip(whole, *shards, strict=True))
        assert len(batches) == 2
        for (x, y), (x0, y0), (x1, y1) in batches:
            assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1)
            assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)
        states = [loader.generator.get_state() for loader in (whole, *shards)]
        assert all(torch.equal(states[0], s) for s in states[1:])


def test_rank_random_states_come_from_their_own_slot():
    state = {"method_rng": "r0", "other_ranks": [{"method_rng": "r1"}]}
    assert _rank_rng_states(state, 0)["method_rng"] == "r0"
    assert _rank_rng_states(state, 1)["method_rng"] == "r1"
    assert _rank_rng_states(state, 2) is None
    assert distributed.method_seed(7, 0) == 7 and distributed.method_seed(7, 2) == 7 + 2**33


def test_processes_per_run_follows_the_launch(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.processes_per_run(None, "local") == 1
    assert distributed.processes_per_run(4, "slurm") == 4
    with pytest.raises(CalibenchError, match="torchrun --nproc_per_node 2"):
        distributed.processes_per_run(2, "local")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.launch_from_env().local_rank == 1
    assert distributed.processes_per_run(None, "local") == 2
    with pytest.raises(CalibenchError, match="does not match"):
        distributed.processes_per_run(4, "local")
    with pytest.raises(CalibenchError, match="Drop --executor"):
        distributed.processes_per_run(None, "slurm")


def test_random_resized_crop_box_stays_inside_with_the_asked_area_and_ratio():
    import random

    rng = random.Random(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop_box(40, 60, (0.08, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= top <= 40 - h and 0 <= left <= 60 - w
        assert 0.08 * 2400 * 0.9 <= h * w <= 2400
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    assert random_resized_crop_box(10, 100, (0.9, 1.0), (1.0, 1.0), rng) == (0, 45, 10, 10)


def test_views_have_the_model_size_and_follow_their_seed():
    image = torch.randint(0, 256, (3, 30, 50), dtype=torch.uint8)
    spec = DATASETS.get("imagenet").stream
    assert eval_view(image, spec).shape == (3, 224, 224)
    a, b = train_view(image, spec, True, 5), train_view(image, spec, True, 5)
    assert a.shape == (3, 224, 224) and torch.equal(a, b)
    assert not torch.equal(a, train_view(image, spec, True, 6))
    flat = torch.arange(3 * 4 * 8, dtype=torch.uint8).view(3, 4, 8)
    small = type(spec)(crop_size=2, resize_size=4)
    assert torch.equal(eval_view(flat, small), flat[:, 1:3, 3:5])


def test_imagenet_listing_split_and_layout_errors(tmp_path):
    write_fake_imagenet(tmp_path)
    data = load_imagenet(DataRequest(tmp_path, split_seed=3), num_classes=3)
    assert data.class_names == WNIDS
    assert (len(data.train), len(data.val), len(data.test)) == (15, 3, 6)
    assert sorted(data.val.labels.tolist()) == [0, 1, 2]
    assert data.test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert data.test.path(2).endswith(f"val/{WNIDS[1]}/{WNIDS[1]}_0.JPEG")
    assert not set(data.train_indices) & set(data.val_indices)
    other = load_imagenet(DataRequest(tmp_path, split_seed=4), num_classes=3)
    again = load_imagenet(DataRequest(tmp_path, split_seed=3), num_classes=3)
    assert np.array_equal(again.val_indices, data.val_indices)
    assert not np.array_equal(other.val_indices, data.val_indices)
    with pytest.raises(CalibenchError, match="holds 3 class folders, expected 1000"):
        load_imagenet(DataRequest(tmp_path))
    with pytest.raises(CalibenchError, match="cannot be downloaded"):
        load_imagenet(DataRequest(tmp_path, download=True), num_classes=3)
    (tmp_path / "imagenet" / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"x")
    with pytest.raises(CalibenchError, match="not in class folders"):
        load_imagenet(DataRequest(tmp_path), num_classes=3)
    with pytest.raises(CalibenchError, match="not found"):
        load_imagenet(DataRequest(tmp_path / "nowhere"), num_classes=3)


def test_stream_loader_batches_do_not_depend_on_shards_workers_or_decoding_place(tmp_path):
    write_fake_imagenet(tmp_path)
    data = load_imagenet(DataRequest(tmp_path), num_classes=3)
    spec = imagenet_dataset("imagenet_small", num_classes=3, crop_size=24, resize_size=28)
    cpu = torch.device("cpu")

    def epoch(rank=0, world=1, workers=0, on_device=False, train=True):
        loader = StreamLoader(
            LoaderConfig(
                data.train,
                spec,
                4,
                cpu,
                train,
                torch.Generator().manual_seed(2),
                rank,
                world,
                workers,
                on_device,
            )
        )
        return list(loader)

    whole = epoch()
    assert len(whole) == 3 and whole[0][0].shape == (4, 3, 24, 24)
    for other in (epoch(workers=1), epoch(on_device=True)):
        assert all(
            torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
            for a, b in zip(whole, other, strict=True)
        )
    halves = epoch(0, 2), epoch(1, 2)
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *halves, strict=True):
        assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1)
        assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)
    evaluation = epoch(train=False)
    assert [len(y) for _, y in evaluation] == [4, 4, 4, 3]
    assert torch.equal(torch.cat([y for _, y in evaluation]), data.train.labels)


# --- the shared two-process launch ---


def test_ddp_gradients_equal_one_process_on_the_whole_batch(ranks):
    x, y = gradient_batch()
    expected = loss_gradients(MLP(), "ce", x, y, 1)
    for rank in range(2):
        got = torch.load(ranks / f"grads{rank}.pt", weights_only=True)["ce"]
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-7)


def test_ddp_gradients_of_a_two_forward_method_are_the_mean_of_the_ranks(ranks):
    x, y = gradient_batch()
    per_rank = [
        loss_gradients(MLP(), "rankmixup_mndcg", x[r::2], y[r::2], distributed.method_seed(1, r))
        for r in range(2)
    ]
    whole = loss_gradients(MLP(), "rankmixup_mndcg", x, y, 1)
    for rank in range(2):
        got = torch.load(ranks / f"grads{rank}.pt", weights_only=True)["rankmixup_mndcg"]
        for g, g0, g1 in zip(got, *per_rank, strict=True):
            torch.testing.assert_close(g, (g0 + g1) / 2, rtol=1e-5, atol=1e-7)
        assert not all(torch.allclose(g, w) for g, w in zip(got, whole, strict=True))


def test_crl_history_over_two_processes_equals_the_single_process_history(ranks):
    whole = crl_history(0, 1)
    own_shards = crl_history(0, 2)
    assert whole.sum() > own_shards.sum() > 0
    for rank in range(2):
        saved = torch.load(ranks / f"crl{rank}.pt", weights_only=True)
        assert saved["wired"]
        assert torch.equal(saved["counts"], whole)


def test_single_process_crl_keeps_its_history_without_a_collective():
    assert prepare(tiny_spec("crl", epochs=1)).method.sum_over_processes is None
    assert distributed.sum_collective() is None


def test_sync_bn_on_cpu_processes_is_a_clear_error(ranks):
    for rank in range(2):
        assert "sync_bn needs CUDA" in (ranks / f"sync_bn{rank}.txt").read_text()


def test_two_process_digits_run_is_evaluated_once_on_the_full_test_set(ranks):
    run_dir, spec = stored_run(ranks / "digits", 0)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["n_test"] == 360
    data = load_dataset(spec.dataset, "", False, spec.training.split_seed)
    expected = single_thread_evaluation(run_dir, spec, data, DeviceLoader)
    assert {k: metrics[k] for k in expected} == expected
    assert [r["epoch"] for r in log_rows(run_dir)] == ["1"]


def test_two_process_imagenet_run_metrics_equal_one_process_evaluation(ranks):
    run_dir, spec = stored_run(ranks / "out", 0)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["n_test"] == 6
    data = load_dataset(spec.dataset, spec.data_root, False, spec.training.split_seed)
    expected = single_thread_evaluation(run_dir, spec, data, StreamLoader)
    assert {k: metrics[k] for k in expected} == expected
    logits = np.load(run_dir / "logits.npz")
    assert np.array_equal(logits["test_labels"], data.test.labels.numpy())


def test_killed_two_process_run_resumes_in_one_process(ranks, monkeypatch):
    monkeypatch.setenv("CALIBENCH_WORKERS", "0")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "DIE_AT_CALL"):
        monkeypatch.delenv(name, raising=False)
    run_dir, spec = stored_run(ranks / "out", 1)
    store = Store(ranks / "out")
    assert store.status(spec) == "interrupted"
    checkpoint = torch.load(run_dir / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 1 and len(checkpoint["other_ranks"]) == 1
    first = log_rows(run_dir)
    assert cli_main(cli_args(ranks, "0,1")) == 0
    assert store.status(spec) == "complete"
    rows = log_rows(run_dir)
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[0] == first[0]
    assert json.loads((run_dir / "metrics.json").read_text())["processes"] == 1


def test_torchrun_launches_the_run_command(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("RANK", None)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "calibench.cli",
        "run",
        "--datasets=digits",
        "--methods=ce",
        "--epochs=1",
        "--gpus-per-run=2",
        f"--output={tmp_path}",
        "--device=cpu",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("sweep: 1 complete") == 1
    (metrics,) = [json.loads(p.read_text()) for p in tmp_path.glob("runs/*/*/*/*/metrics.json")]
    assert metrics["processes"] == 2


def test_slurm_executor_runs_one_task_per_process(tmp_path):
    pytest.importorskip("submitit")
    from calibench.training.executors import run_slurm

    spec = tiny_spec("ce", epochs=1)
    store = Store(tmp_path)
    params = {"cluster": "local", "timeout_min": 5, "gpus_per_node": 0}
    (outcome,) = run_slurm([spec], store, [], params, gpus_per_run=2)
    assert outcome.status == "complete" and outcome.metrics["processes"] == 2
    assert store.is_complete(spec)
