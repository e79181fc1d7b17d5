"""benchmark.toml + flags -> run specs: layering, overrides and clear errors."""

from __future__ import annotations

import pytest

from calibench import CalibenchError
from calibench.config import DEFAULT_CONFIG, Overrides, build_run_specs, load_config, parse_sets
from calibench.spec import RunSpec, Training


@pytest.fixture
def config():
    return load_config(DEFAULT_CONFIG)


def test_default_preset_runs_every_method_on_digits(config):
    specs = build_run_specs(config, Overrides())
    import calibench

    assert sorted(s.method for s in specs) == calibench.list_methods()
    assert {s.dataset for s in specs} == {"digits"}
    assert {s.backbone for s in specs} == {"small_cnn"}


def test_dataset_protocol_applies_whatever_the_preset(config):
    """--datasets cifar10 on the quick preset gets the CIFAR protocol of docs/protocol.md."""
    spec = build_run_specs(config, Overrides(methods=["rankmixup_mrl"], datasets=["cifar10"]))[0]
    assert spec.backbone == "resnet50"
    assert spec.training.epochs == 200 and spec.training.milestone_epochs() == [80, 120]
    assert spec.training.batch_size == 128 and spec.training.lr == 0.1
    assert spec.training.weight_decay == 5e-4 and spec.training.grad_clip == 2.0
    assert spec.hparams == {"margin": 2.0, "alpha": 2.0, "weight": 0.1, "confidence": "logit"}


def test_tiny_imagenet_protocol(config):
    spec = build_run_specs(config, Overrides(preset="paper-tiny", methods=["rankmixup_mrl"]))[0]
    assert spec.backbone == "resnet50_tiny" and spec.training.batch_size == 64
    assert spec.training.milestone_epochs() == [40, 60]
    assert spec.hparams == {"margin": 1.0, "alpha": 1.0, "weight": 0.1, "confidence": "logit"}


def test_epochs_flag_rescales_milestones(config):
    spec = build_run_specs(config, Overrides(datasets=["cifar10"], methods=["ce"], epochs=10))[0]
    assert spec.training.epochs == 10 and spec.training.milestone_epochs() == [4, 6]


def test_set_overrides_method_and_training(config):
    specs = build_run_specs(
        config,
        Overrides(
            methods=["rankmixup_mrl", "ce"],
            datasets=["cifar10"],
            sets=["rankmixup_mrl.margin=1.5", "rankmixup_mrl.confidence=prob", "training.lr=0.05"],
        ),
    )
    mrl = next(s for s in specs if s.method == "rankmixup_mrl")
    assert mrl.hparams == {"margin": 1.5, "alpha": 2.0, "weight": 0.1, "confidence": "prob"}
    assert all(s.training.lr == 0.05 for s in specs)


def test_cross_product_and_seeds(config):
    specs = build_run_specs(config, Overrides(methods=["ce", "focal"], seeds=[0, 1, 2]))
    assert len(specs) == 6 and len({s.run_id for s in specs}) == 6


def test_run_id_uses_resolved_hyperparameters_and_duplicates_collapse(config):
    typed = build_run_specs(config, Overrides(methods=["mbls"], sets=["mbls.margin=10"]))
    default = build_run_specs(config, Overrides(methods=["mbls"], seeds=[0, 0]))
    assert len(default) == 1 and typed[0].run_id == default[0].run_id
    assert default[0].hparams == {"margin": 10.0, "alpha": 0.1}


def test_run_id_ignores_where_and_how_it_runs():
    a = RunSpec("ce", "digits", "small_cnn", 0, Training(), device="cpu", data_root="/a")
    b = RunSpec("ce", "digits", "small_cnn", 0, Training(), device="cuda", data_root="/b")
    c = RunSpec("ce", "digits", "small_cnn", 1, Training())
    assert a.run_id == b.run_id != c.run_id
    assert RunSpec.from_dict(a.to_dict()) == a


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (Overrides(methods=["nope"]), r"unknown method 'nope'\. Valid methods: brier, camixup, ce"),
        (Overrides(datasets=["imagenet22k"]), r"unknown dataset 'imagenet22k'\. Valid datasets:"),
        (Overrides(backbones=["vgg99"]), r"unknown backbone 'vgg99'\. Valid backbones:"),
        (Overrides(preset="nope"), r"unknown preset 'nope'\. Valid presets:"),
        (Overrides(methods=["ce"], sets=["ce"]), "is not NAME.PARAM=VALUE"),
        (Overrides(methods=["mbls"], sets=["mbls.margin=-1"]), "margin must be >= 0"),
        (Overrides(methods=["mbls"], sets=["mbls.nope=1"]), "no hyperparameter nope"),
        (Overrides(methods=["ce"], sets=["focal.gamma=1"]), "not in this run"),
        (Overrides(methods=["ce"], sets=["training.nope=1"]), "unknown training setting 'nope'"),
        (Overrides(methods=["ce"], sets=["training.epochs=0"]), "epochs must be >= 1"),
        (Overrides(methods=["ce"], sets=["training.lr=abc"]), "lr must be a finite number, got"),
        (Overrides(methods=["ce"], sets=["training.epochs=true"]), "epochs must be an integer"),
        (Overrides(methods=["ce"], sets=["training.n_bins=0"]), "n_bins must be in \\[1, 1000\\]"),
        (Overrides(methods=["ce"], sets=["training.eval_batch_size=0"]), "eval_batch_size"),
        (Overrides(methods=["ce"], sets=["training.grad_clip=x"]), "grad_clip must be a finite"),
        (Overrides(methods=["ce"], sets=["training.momentum=1.5"]), "momentum must be in"),
        (Overrides(methods=["ce"], seeds=[True]), "seeds must be a list of integers in"),
        (Overrides(methods=["zzz*"]), "the pattern 'zzz\\*' matches no method"),
    ],
)
def test_bad_input_is_one_clear_error(config, overrides, message):
    with pytest.raises(CalibenchError, match=message):
        build_run_specs(config, overrides)


def test_malformed_toml_is_a_clear_error(tmp_path):
    path = tmp_path / "benchmark.toml"
    path.write_text("[presets.quick\nmethods = 1\n")
    with pytest.raises(CalibenchError, match="is not valid TOML"):
        load_config(path)


def test_parse_sets_reads_toml_literals():
    assert parse_sets(["a.b=5", "a.c=0.5", "a.d=true", "a.e=prob", 'a.f="x y"']) == {
        "a": {"b": [5], "c": [0.5], "d": [True], "e": ["prob"], "f": ["x y"]}
    }
    assert parse_sets(["a.m=[0.3, 0.6]", "a.g=1,2,4", "a.c=logit,prob"]) == {
        "a": {"m": [[0.3, 0.6]], "g": [1, 2, 4], "c": ["logit", "prob"]}
    }


def test_set_grids_expand_into_the_product_of_runs(config):
    specs = build_run_specs(
        config,
        Overrides(
            methods=["rankmixup_mrl", "ce"],
            sets=["rankmixup_mrl.margin=0.5,1,2", "training.lr=0.05,0.1"],
        ),
    )
    mrl = sorted((s.hparams["margin"], s.training.lr) for s in specs if s.method == "rankmixup_mrl")
    assert mrl == [(m, lr) for m in (0.5, 1.0, 2.0) for lr in (0.05, 0.1)]
    assert sorted(s.training.lr for s in specs if s.method == "ce") == [0.05, 0.1]
    assert len({s.run_id for s in specs}) == 8


def test_timm_backbones_are_checked_before_training(config):
    spec = build_run_specs(config, Overrides(methods=["ce"], backbones=["timm/resnet18"]))[0]
    assert spec.backbone == "timm/resnet18"
    with pytest.raises(CalibenchError, match="Unknown timm model 'resnet_nope'"):
        build_run_specs(config, Overrides(methods=["ce"], backbones=["timm/resnet_nope"]))


def test_pretrained_needs_a_timm_backbone(config):
    with pytest.raises(CalibenchError, match="only timm/<name> backbones"):
        build_run_specs(config, Overrides(methods=["ce"], sets=["training.pretrained=true"]))
    spec = build_run_specs(
        config,
        Overrides(methods=["ce"], backbones=["timm/resnet18"], sets=["training.pretrained=true"]),
    )[0]
    assert spec.training.pretrained and "pretrained" in spec.identity()["training"]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('default_preset = "quick"\npresets = 5\n', r"\[presets\] must be a table"),
        ('default_preset = "x"\n[presets]\nx = 3\n', r"\[presets.x\] must be a table"),
        ("default_preset = [1]\n[presets.quick]\n", "unknown preset"),
        ("[presets.quick]\n[datasets]\ndigits = 5\n", r"\[datasets.digits\] must be a table"),
        ("[presets.quick]\n[datasets.digitz]\nepochs = 2\n", "unknown dataset 'digitz'"),
        ('[presets.quick]\n[datasets.digits]\nlr = "a"\n', "lr must be a finite number"),
        ('[presets.quick]\nmilestones = "x"\n', "milestones must be a list of numbers"),
    ],
)
def test_malformed_config_values_are_clear_errors(tmp_path, toml, message):
    path = tmp_path / "benchmark.toml"
    path.write_text(toml)
    with pytest.raises(CalibenchError, match=message):
        build_run_specs(load_config(path), Overrides())
