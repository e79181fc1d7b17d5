"""Bad input to `calibench run` (calibench/config.py and the CLI's checks): one clear message,
exit code 2, and nothing created; arbitrary settings give run specs or one CalibenchError
(docs/reliability.md, "Failures that stop the command")."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import one_error_line

from calibench.cli import main
from calibench.config import Overrides, build_run_specs, load_config
from calibench.errors import CalibenchError
from calibench.spec import TRAINING_KEYS, RunSpec


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
