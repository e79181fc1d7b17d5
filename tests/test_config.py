"""benchmark.toml + flags -> run specs (calibench/config.py): layering, overrides, ablation
grids, the paper presets' hyperparameters with their sources, and clear errors. Bad input to
`calibench run` (config.py and the CLI's checks): one clear message, exit code 2, and nothing
created; arbitrary settings give run specs or one CalibenchError (docs/reliability.md, "Failures
that stop the command")."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import one_error_line

from calibench import CalibenchError, get_method
from calibench.cli import main
from calibench.config import (
    DEFAULT_CONFIG,
    Overrides,
    build_run_specs,
    config_files,
    load_config,
    merge,
    parse_sets,
    plugin_dirs,
)
from calibench.spec import TRAINING_KEYS, RunSpec, Training


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
        (Overrides(methods=["ce"], sets=["training.epochs=-1"]), "epochs must be >= 0"),
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


# A user's file layers on the packaged defaults (issue 21, item 2)


def write(tmp_path: Path, text: str | bytes, name: str = "benchmark.toml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_a_file_with_only_a_dataset_keeps_the_packaged_presets(tmp_path):
    """Was: unknown preset 'quick' (the user's file replaced the defaults)."""
    path = write(tmp_path, "[datasets.digits]\nepochs = 2\n")
    specs = build_run_specs(load_config(path), Overrides(methods=["ce"]))
    (spec,) = specs
    assert spec.training.epochs == 2
    assert spec.training.batch_size == 64 and spec.training.lr == 0.05
    assert spec.backbone == "small_cnn" and spec.training.n_bins == 15


def test_tables_merge_key_by_key_and_lists_replace(tmp_path, config):
    path = write(
        tmp_path,
        "[datasets.cifar10.hparams.rankmixup_mrl]\nmargin = 1.5\n"
        "[presets.quick]\nseeds = [4, 5]\n"
        "[training]\nmilestones = [0.5]\n",
    )
    layered = load_config(path)
    assert layered["presets"]["quick"]["seeds"] == [4, 5]
    assert layered["presets"]["quick"]["methods"] == config["presets"]["quick"]["methods"]
    assert layered["presets"]["quick"]["description"] == config["presets"]["quick"]["description"]
    assert set(layered["presets"]) == set(config["presets"])
    specs = build_run_specs(layered, Overrides(methods=["rankmixup_mrl"], datasets=["cifar10"]))
    assert {s.seed for s in specs} == {4, 5}
    spec = specs[0]
    assert spec.hparams == {"margin": 1.5, "alpha": 2.0, "weight": 0.1, "confidence": "logit"}
    assert spec.backbone == "resnet50" and spec.training.milestones == (0.5,)
    assert spec.training.epochs == 200


def test_merge_is_deep_for_tables_only():
    base = {"a": {"b": {"c": 1, "d": [1, 2]}, "e": 2}, "f": 3}
    over = {"a": {"b": {"d": [3]}, "g": 4}, "f": {"h": 5}}
    assert merge(base, over) == {"a": {"b": {"c": 1, "d": [3]}, "e": 2, "g": 4}, "f": {"h": 5}}
    assert base == {"a": {"b": {"c": 1, "d": [1, 2]}, "e": 2}, "f": 3}


def test_config_files_name_the_packaged_defaults_once(tmp_path):
    assert config_files(DEFAULT_CONFIG) == [DEFAULT_CONFIG]
    user = write(tmp_path, "")
    assert config_files(user) == [DEFAULT_CONFIG, user]
    assert load_config(user) == load_config(DEFAULT_CONFIG)


def test_plugin_paths_are_relative_to_the_file_that_names_them(tmp_path):
    (tmp_path / "sub").mkdir()
    path = write(tmp_path / "sub", '[plugins]\npaths = ["mine", "/abs/other"]\n')
    config = load_config(path)
    assert plugin_dirs(config, DEFAULT_CONFIG) == [tmp_path / "sub" / "mine", Path("/abs/other")]


def test_list_presets_names_every_file_it_read(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, '[presets.mine]\ndescription = "mine [red]only[/]"\nmethods = ["ce"]\n')
    assert main(["list", "presets"]) == 0
    out = "".join(capsys.readouterr().out.split())
    assert f"presetsof{DEFAULT_CONFIG}+{tmp_path / 'benchmark.toml'}" in out
    assert "mine:mine[red]only[/]" in out and "quick(default)" in out


def test_init_still_writes_a_full_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    assert (tmp_path / "benchmark.toml").read_bytes() == DEFAULT_CONFIG.read_bytes()


# Hostile settings files (issue 19)


def test_a_file_that_is_not_utf8_is_one_clear_error(tmp_path, capsys):
    path = write(tmp_path, b'default_preset = "qu\xefck"\n')
    with pytest.raises(CalibenchError, match="is not UTF-8 text"):
        load_config(path)
    assert main(["run", "--config", str(path), "--output", str(tmp_path / "out")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "is not UTF-8 text (byte 20 cannot be decoded)" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[trainnig]\nepochs = 3\n", r"unknown top-level names 'trainnig'\. Valid: \[datasets\]"),
        ("default_presets = 'quick'\n", "unknown top-level names 'default_presets'"),
        ("[training]\nepoch = 3\nlrr = 1\n", r"\[training\] has unknown settings 'epoch', 'lrr'"),
        ("[plugins]\npath = ['x']\n", r"\[plugins\] has unknown settings 'path'\. Valid: paths"),
        (
            "[presets.other]\nmethdos = ['ce']\n",
            r"\[presets.other\] has unknown settings 'methdos'\. Valid: backbones, datasets",
        ),
        (
            "[datasets.cifar10]\nbackbones = 'resnet50'\n",
            r"\[datasets.cifar10\] has unknown settings 'backbones'\. Valid: backbone",
        ),
        ("[presets]\nother = 1\n", r"\[presets.other\] must be a table"),
        ("[plugins]\npaths = 'x'\n", r"\[plugins\] paths must be a list of folder names"),
    ],
)
def test_unknown_names_in_a_file_are_rejected(tmp_path, toml, message):
    path = write(tmp_path, toml)
    with pytest.raises(CalibenchError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_every_bad_training_value_of_the_layers_is_one_message(tmp_path):
    path = write(tmp_path, "[training]\nlr = -1\n[presets.quick]\nepochs = -1\n")
    with pytest.raises(CalibenchError) as info:
        build_run_specs(load_config(path), Overrides(methods=["ce"]))
    assert str(info.value) == (
        "[training]: training setting lr must be > 0, got -1.0; "
        "[presets.quick]: training setting epochs must be >= 0 (0: weights evaluated untrained), "
        "got -1."
    )


TOML_PIECES = st.sampled_from(
    [
        b'default_preset = "quick"\n',
        b'default_preset = "nope"\n',
        b"[training]\n",
        b"[trainnig]\n",
        b"[presets.quick]\n",
        b"[presets.quick.hparams.focal]\n",
        b"[datasets.digits]\n",
        b"[plugins]\n",
        b"epochs = 1\n",
        b"n_bins = 0\n",
        b"gamma = -1\n",
        b"lr = inf\n",
        b"seeds = [0, 1]\n",
        b'methods = ["ce", "focal"]\n',
        b'paths = ["x"]\n',
        b"milestones = [0.5, 2]\n",
        b"when = 1979-05-27\n",
        b'"a b" = {c = [[1], "x"]}\n',
        b"\xff\xfe",
        b"\x00",
    ]
)
PIECED = st.lists(st.one_of(TOML_PIECES, TOML_PIECES, st.binary(max_size=3)), max_size=8)
TOML_BYTES = st.one_of(st.binary(max_size=48), PIECED.map(b"".join), PIECED.map(b"".join))
"""Arbitrary bytes, and more often settings-like lines with stray bytes between them."""


@settings(max_examples=200, deadline=None, database=None)
@given(data=TOML_BYTES)
def test_any_bytes_as_a_settings_file_give_run_specs_or_one_clear_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("bytes") / "benchmark.toml"
    path.write_bytes(data)
    try:
        specs = build_run_specs(load_config(path), Overrides())
    except CalibenchError as exc:
        assert str(exc).strip() and "\n" not in str(exc).strip()
        return
    assert specs and all(1 <= s.training.epochs for s in specs)


# Ablation grids: a preset's one-at-a-time ``vary`` tables


def test_vary_is_one_parameter_at_a_time():
    config = load_config(DEFAULT_CONFIG)
    specs = build_run_specs(config, Overrides(preset="rankmixup-ablation"))
    mrl = [s.hparams for s in specs if s.method == "rankmixup_mrl"]
    defaults = {"margin": 2.0, "weight": 0.1, "alpha": 2.0}
    assert defaults in [{k: h[k] for k in defaults} for h in mrl]
    for h in mrl:
        assert sum(h[k] != v for k, v in defaults.items()) <= 1
    assert len(mrl) == 1 + 3 + 3 + 3
    assert {s.dataset for s in specs} == {"cifar10"} and len(specs) == 20


# Paper presets: every hyperparameter is written out with its source.

PAPER_PRESETS = ["paper-cifar10", "paper-cifar100", "paper-tiny"]


def paper_hparam_lines() -> dict[str, list[str]]:
    """The key = value lines of each [presets.paper-*.hparams.<method>] table."""
    tables: dict[str, list[str]] = {}
    current = None
    for line in DEFAULT_CONFIG.read_text().splitlines():
        header = re.match(r"\[(.+)\]", line)
        if header:
            name = header.group(1)
            current = name if re.match(r"presets\.paper-[\w-]+\.hparams\.\w+$", name) else None
            if current:
                tables[current] = []
        elif current and "=" in line and not line.lstrip().startswith("#"):
            tables[current].append(line)
    return tables


def test_every_paper_preset_hyperparameter_cites_its_source() -> None:
    tables = paper_hparam_lines()
    assert {t.split(".")[1] for t in tables} == set(PAPER_PRESETS)
    for table, lines in tables.items():
        assert lines, table
        for line in lines:
            source = line.split("#", 1)[1] if "#" in line else ""
            pattern = r"RankMixup|MbLS|mixup-cifar10|Mukhoti|RegMixup|confidence-aware|CAMixup"
            assert re.search(pattern, source), (table, line)


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_paper_presets_set_every_hyperparameter_of_their_methods(preset: str) -> None:
    """Each method with hyperparameters has all of them in the preset, each a valid value; LS and
    MbLS carry the MbLS paper's values (0.05; margin 10, alpha 0.1), not the RankMixup
    repository's configs (0.2; margin 6); CAMixup's alpha lies in (0, 1), where the authors' code
    mixes."""
    config = load_config(DEFAULT_CONFIG)["presets"][preset]
    hparams = config["hparams"]
    for method in config["methods"]:
        fields = set(get_method(method).hyperparameters())
        assert set(hparams.get(method, {})) == fields, method
        get_method(method, **hparams.get(method, {}))
    assert hparams["ls"]["alpha"] == 0.05
    assert (hparams["mbls"]["margin"], hparams["mbls"]["alpha"]) == (10.0, 0.1)
    assert 0 < hparams["camixup"]["alpha"] < 1


# Bad input to `calibench run`: one message, exit 2, nothing created


@pytest.mark.parametrize("setting", ["training.lr=inf", "training.weight_decay=inf"])
def test_infinite_training_settings_are_rejected(tmp_path, capsys, setting):
    argv = ["run", "--methods", "ce", "--set", setting, "--output", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "must be a finite number, got inf" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("training.n_bins=1000000000000", "n_bins must be in [1, 1000]"),
        ("rankmixup_mrl.margin=inf", "margin must be a finite number, got inf"),
    ],
)
def test_unbounded_values_are_one_message(tmp_path, capsys, setting, message):
    argv = ["run", "--methods", "rankmixup_mrl", "--set", setting]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_negative_seeds_blame_the_command_line(tmp_path, capsys):
    assert main(["run", "--seeds", "-1", "--output", str(tmp_path / "out")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--seeds must be" in line and "preset" not in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--datasets", "cifar10", "--data-root", "{tmp}/nodata"],
        ["--set", "training.lr=fast,"],
        ["--set", "ce.nope=1"],
        ["--seeds", str(2**64)],
        [
            "--executor",
            "processes",
            "--devices",
            "cpu",
            "--datasets",
            "cifar10",
            "--data-root",
            "{tmp}/nodata",
        ],
    ],
)
def test_a_rejected_command_creates_nothing(tmp_path, capsys, argv):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    out = tmp_path / "out"
    assert main(["run", "--methods", "ce", *argv, "--device", "cpu", "--output", str(out)]) == 2
    one_error_line(capsys.readouterr().err)
    assert not out.exists()


# Property: arbitrary settings are run specs or one clear error -----------------------------


def _toml(value: object) -> str:
    """``value`` as a TOML literal (``inf``/``nan`` included)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"


SCALARS = st.one_of(
    st.text(max_size=8),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),
    st.booleans(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2)
    ),
    max_leaves=6,
)
PLAUSIBLE = st.one_of(
    st.integers(0, 5),
    st.floats(0.01, 0.99),
    st.sampled_from(["fp32", "nll", "ece_grid", ["digits"], ["small_cnn"], [0, 1], [0.5]]),
)
"""Values that are often valid, so that many examples get as far as building run specs."""
VALUES = PLAUSIBLE | VALUES
TRAINING = st.sampled_from([*sorted(TRAINING_KEYS), "bogus"])
HPARAMS = st.sampled_from(
    ["rankmixup_mrl.margin", "rankmixup_mndcg.num_mixup", "focal.gamma", "ls.alpha", "ce.x"]
)
SETS = st.lists(
    st.one_of(
        st.tuples(TRAINING.map(lambda k: f"training.{k}"), VALUES.map(_toml)),
        st.tuples(HPARAMS, VALUES.map(_toml)),
        st.tuples(st.text(max_size=12), st.text(max_size=12)),
    ),
    max_size=3,
).map(lambda pairs: [f"{k}={v}" for k, v in pairs])
METHOD_TABLES = st.dictionaries(
    st.sampled_from(["rankmixup_mrl", "focal", "ce", "nope"]),
    st.dictionaries(st.sampled_from(["margin", "alpha", "gamma", "num_mixup", "x"]), VALUES)
    | VALUES,
    max_size=2,
)
GOOD_NAMES = st.sampled_from([["digits"], "digits", ["small_cnn", "tiny_cnn"], []])
NAMES = st.one_of(GOOD_NAMES, GOOD_NAMES, st.deferred(lambda: VALUES))
PRESET = st.fixed_dictionaries(
    {"methods": st.just(["ce", "rankmixup_mrl", "rankmixup_mndcg", "focal", "ls"])},
    optional={
        "hparams": METHOD_TABLES,
        "seeds": st.one_of(st.lists(st.integers(0, 3), max_size=2), st.deferred(lambda: VALUES)),
        **{k: NAMES for k in ("datasets", "ood", "backbones")},
        **{k: VALUES for k in ("epochs", "lr")},
    },
)


@settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    sets=SETS,
    training=st.dictionaries(TRAINING, VALUES, max_size=3),
    digits=st.dictionaries(st.sampled_from(["backbone", "epochs", "hparams", "lr"]), VALUES)
    | VALUES,
    preset=PRESET,
    seeds=st.none() | st.lists(st.integers(), max_size=2) | st.just([0]),
    as_file=st.booleans(),
)
def test_arbitrary_settings_give_run_specs_or_one_clear_error(
    tmp_path_factory, sets, training, digits, preset, seeds, as_file
):
    config = {
        "default_preset": "p",
        "training": training,
        "datasets": {"digits": digits},
        "presets": {"p": preset},
    }
    try:
        if as_file:
            path = tmp_path_factory.mktemp("toml") / "benchmark.toml"
            text = "\n".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in config.items())
            path.write_text(text)
            config = load_config(path)
        specs = build_run_specs(config, Overrides(sets=sets, seeds=seeds))
    except CalibenchError as exc:
        assert str(exc).strip()
        return
    for spec in specs:
        text = json.dumps(spec.to_dict(), allow_nan=False)
        assert RunSpec.from_dict(json.loads(text)) == spec
        assert 1 <= spec.training.n_bins <= 1000 and spec.seed >= 0
