"""The fast path (channels last, torch.compile, fused views): settings, defaults, run ids, and
training that equals the plain path to float tolerance."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import tiny_spec

from calibench.cli import main
from calibench.data import DeviceLoader, LoaderConfig
from calibench.errors import CalibenchError
from calibench.evaluation.predict import predict_logits
from calibench.settings import build_settings
from calibench.spec import Training
from calibench.store.index import Store
from calibench.training.fast_path import DEFAULTS, ChannelsLastInput, FastPath, parse, resolve
from calibench.training.loop import prepare, train_one_epoch
from calibench.training.runner import train_run

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_takes_the_device_default_and_explicit_values_win():
    assert resolve(Training(), CPU) == DEFAULTS["cpu"]
    assert resolve(Training(), CUDA) == DEFAULTS["cuda"]
    plain = Training(channels_last=False, compile=False, fuse_views=False)
    assert resolve(plain, CPU) == FastPath()
    assert resolve(Training(compile=True, fuse_views=True), CUDA) == FastPath(
        DEFAULTS["cuda"].channels_last, True, True
    )
    assert FastPath(channels_last=True, compile=True).describe() == "channels_last+compile"
    assert FastPath().describe() == "plain"


def test_switch_settings_take_booleans_or_auto_only():
    built = build_settings(Training, {"compile": True, "channels_last": "auto"}, "training")
    assert built.compile is True and built.channels_last == "auto"
    with pytest.raises(
        CalibenchError, match=r"fuse_views must be true or false or 'auto', got 'on'"
    ):
        build_settings(Training, {"fuse_views": "on"}, "training")


def test_fast_path_stays_out_of_the_run_id():
    spec = tiny_spec("ce")
    fast = dataclasses.replace(
        spec, training=Training(**{**vars(spec.training), "compile": True, "channels_last": False})
    )
    assert fast.run_id == spec.run_id and fast.config_id == spec.config_id
    assert "compile" not in spec.identity()["training"]


def test_bench_fast_parses_switch_lists():
    assert parse("auto", CPU) == DEFAULTS["cpu"]
    assert parse("plain", CPU) == FastPath()
    assert parse("channels_last, fuse_views", CPU) == FastPath(True, False, True)
    with pytest.raises(CalibenchError, match="unknown switch turbo"):
        parse("compile,turbo", CPU)


def test_bench_rejects_an_unknown_switch_with_exit_2(capsys):
    code = main(["bench", "--against", "reference", "--fast", "warp", "--device", "cpu"])
    assert code == 2
    assert "unknown switch warp" in capsys.readouterr().err


def _train_steps(method: str, **switches) -> tuple[list[torch.Tensor], torch.Tensor]:
    spec = tiny_spec(method, epochs=1)
    spec = dataclasses.replace(spec, training=Training(**{**vars(spec.training), **switches}))
    p = prepare(spec)
    assert hasattr(p.net, "_orig_mod") == switches.get("compile", False)  # torch.compile's
    assert isinstance(p.net, ChannelsLastInput) == switches.get("channels_last", False)
    config = LoaderConfig(p.data.train, p.dataset, 64, p.device, True, p.generator)
    loader = DeviceLoader(config)
    train_one_epoch(p.net, p.model, p.method, p.optimizer, loader, spec.training, p.fast.fuse_views)
    val = DeviceLoader(LoaderConfig(p.data.val, p.dataset, 256, p.device))
    state = [t.detach().clone() for t in p.model.state_dict().values()]
    return state, torch.from_numpy(predict_logits(p.model, val))


PLAIN = {"channels_last": False, "compile": False, "fuse_views": False}


@pytest.mark.parametrize(
    ("method", "switch"),
    [
        ("ce", "channels_last"),
        ("rankmixup_mndcg", "channels_last"),
        ("rankmixup_mndcg", "fuse_views"),
        ("rankmixup_mrl", "compile"),
    ],
)
def test_an_epoch_on_the_fast_path_equals_the_plain_one(method, switch):
    plain_state, plain_logits = _train_steps(method, **PLAIN)
    fast_state, fast_logits = _train_steps(method, **{**PLAIN, switch: True})
    # the switches reorder float sums; over an epoch of SGD the weights drift apart by up to
    # 4.4e-4 (channels_last, one OpenMP thread, this CPU): equal up to that, same predictions
    for a, b in zip(plain_state, fast_state, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(plain_logits, fast_logits, rtol=1e-3, atol=1e-3)
    assert (plain_logits.argmax(1) == fast_logits.argmax(1)).float().mean() > 0.99


def test_the_result_records_the_fast_path(tmp_path):
    store = Store(tmp_path)
    spec = tiny_spec("ce", epochs=1)
    metrics = train_run(spec, store)
    assert metrics["fast_path"] == DEFAULTS["cpu"].describe()
    config = json.loads((store.run_dir(spec) / "config.json").read_text())
    assert config["training"]["channels_last"] == "auto"
