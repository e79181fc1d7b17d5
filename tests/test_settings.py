"""calibench.settings: a setting's type and range read from its annotation, one message per
table, and the registries' settings classes checked against their own annotations."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibench import CalibenchError
from calibench.evaluation.calibrators import get_calibrator, list_calibrators
from calibench.settings import (
    Ge,
    Gt,
    Interval,
    Le,
    Lt,
    build_settings,
    check_fields,
    coerce,
    field_annotations,
    field_types,
)
from calibench.spec import Training


@pytest.mark.parametrize(
    ("rule", "inside", "outside", "text"),
    [
        (Gt(0), [1e-12, 3], [0, -1], "> 0"),
        (Ge(0), [0, 2.5], [-1e-12], ">= 0"),
        (Lt(1), [0.999, -5], [1, 2], "< 1"),
        (Le(64), [64, 1], [65], "<= 64"),
        (Interval(0, 1), [0, 1, 0.5], [-0.1, 1.1], "in [0, 1]"),
        (Interval(0, 1, closed="left"), [0, 0.99], [1, -1], "in [0, 1)"),
        (Interval(0, 1, closed="right"), [1, 1e-9], [0, 1.5], "in (0, 1]"),
        (Interval(0.5, 2.5, closed="neither"), [1], [0.5, 2.5], "in (0.5, 2.5)"),
    ],
)
def test_constraints_hold_inside_and_state_their_rule(rule, inside, outside, text) -> None:
    assert all(rule.holds(v) for v in inside)
    assert not any(rule.holds(v) for v in outside)
    assert rule.rule() == text


def test_a_note_follows_the_rule() -> None:
    assert Ge(0, note="0 turns clipping off").describe() == ">= 0 (0 turns clipping off)"


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        (3, Annotated[float, Gt(0)], 3.0),
        (True, bool, True),
        ("prob", Literal["logit", "prob"], "prob"),
        (None, Annotated[float, Ge(0)] | None, None),
        (2, Annotated[float, Ge(0)] | None, 2.0),
        ([0.5, 1], tuple[Annotated[float, Interval(0, 1, closed="right")], ...], (0.5, 1.0)),
        ("auto", bool | Literal["auto"], "auto"),
    ],
)
def test_coerce_accepts_and_converts(value: Any, kind: Any, expected: Any) -> None:
    got = coerce(value, kind, "x")
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("value", "kind", "message"),
    [
        (0, Annotated[float, Gt(0)], "x must be > 0, got 0.0."),
        (True, Annotated[float, Gt(0)], "x must be a finite number, got True."),
        (math.inf, float, "x must be a finite number, got inf."),
        (math.nan, Annotated[float, Ge(0)], "x must be a finite number, got nan."),
        (1.5, Annotated[int, Ge(1)], "x must be an integer, got 1.5."),
        (65, Annotated[int, Ge(1), Le(64)], "x must be <= 64, got 65."),
        (0, Annotated[int, Ge(1), Le(64)], "x must be >= 1, got 0."),
        ("mean", Literal["logit", "prob"], "x must be one of 'logit', 'prob', got 'mean'."),
        (-1, Annotated[float, Ge(0)] | None, "x must be >= 0, got -1.0."),
        ("a", Annotated[float, Ge(0)] | None, "x must be a finite number, got 'a'."),
        (3, bool | Literal["auto"], "x must be true or false or 'auto', got 3."),
        (
            [0.5, 2],
            tuple[Annotated[float, Interval(0, 1, closed="right", note="a fraction")], ...],
            "x[1] must be in (0, 1] (a fraction), got 2.0.",
        ),
        ("0.5", tuple[float, ...], "x must be a list of numbers, got '0.5'."),
    ],
)
def test_coerce_names_the_setting_the_rule_and_the_value(
    value: Any, kind: Any, message: str
) -> None:
    with pytest.raises(CalibenchError) as info:
        coerce(value, kind, "x")
    assert str(info.value) == message


@dataclass
class _Demo:
    rate: Annotated[float, Gt(0)] = 0.1
    count: Annotated[int, Ge(1)] = 2
    mode: Literal["a", "b"] = "a"


def test_field_types_drop_the_constraints_and_annotations_keep_them() -> None:
    assert field_types(_Demo) == {
        "rate": (float, 0.1),
        "count": (int, 2),
        "mode": (Literal["a", "b"], "a"),
    }
    assert field_annotations(_Demo)["rate"] == Annotated[float, Gt(0)]


def test_every_bad_value_of_a_table_is_one_message() -> None:
    with pytest.raises(CalibenchError) as info:
        build_settings(_Demo, {"rate": -1, "count": 0, "mode": "c"}, "demo")
    assert str(info.value) == (
        "demo: rate must be > 0, got -1.0; count must be >= 1, got 0; "
        "mode must be one of 'a', 'b', got 'c'."
    )
    with pytest.raises(CalibenchError, match=r"demo has no setting nope, zz\. Valid: rate, count"):
        build_settings(_Demo, {"nope": 1, "zz": 2, "rate": -1}, "demo")
    assert build_settings(_Demo, {"rate": 2, "count": 3}, "demo") == _Demo(2.0, 3)


def test_check_fields_checks_an_instance() -> None:
    check_fields(_Demo(), "demo")
    with pytest.raises(CalibenchError, match=r"^demo: count must be >= 1, got 0\.$"):
        check_fields(_Demo(count=0), "demo")


def test_training_checks_itself_and_lists_every_problem() -> None:
    with pytest.raises(CalibenchError) as info:
        Training(epochs=0, milestones=(0.5, 2.0), momentum=1.0, n_bins=1001)
    assert str(info.value) == (
        "bad training settings: epochs must be >= 1, got 0; milestones[1] must be in (0, 1] "
        "(a fraction of the epochs), got 2.0; momentum must be in [0, 1), got 1.0; "
        "n_bins must be in [1, 1000], got 1001."
    )


@pytest.mark.parametrize("name", list_calibrators())
def test_calibrator_defaults_obey_their_annotations(name: str) -> None:
    calibrator = get_calibrator(name)
    check_fields(calibrator, name)
    assert get_calibrator(name, **calibrator.hyperparameters()) == calibrator


@pytest.mark.parametrize(
    ("name", "hp", "message"),
    [
        ("histogram_binning", {"n_bins": 0}, "calibrator histogram_binning: n_bins must be >= 1"),
        ("temperature", {"n_bins": -3}, "calibrator temperature: n_bins must be >= 1"),
        ("vector", {"max_iter": 0}, "calibrator vector: max_iter must be >= 1"),
        ("matrix_odir", {"reg_lambda": -1, "reg_mu": -2}, "reg_lambda must be >= 0, got -1.0; "),
    ],
)
def test_calibrator_ranges_come_from_the_annotations(name: str, hp: dict, message: str) -> None:
    with pytest.raises(CalibenchError, match=message.replace("[", r"\[")):
        get_calibrator(name, **hp)


RULES = st.one_of(
    st.builds(Gt, st.integers(-3, 3)),
    st.builds(Ge, st.integers(-3, 3)),
    st.builds(Lt, st.integers(-3, 3)),
    st.builds(Le, st.integers(-3, 3)),
    st.builds(
        Interval,
        st.integers(-3, 0),
        st.integers(0, 3),
        st.sampled_from(["both", "left", "right", "neither"]),
    ),
)
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=4),
    st.lists(st.floats(), max_size=3),
)


@settings(max_examples=300, deadline=None, database=None)
@given(rule=RULES, base=st.sampled_from([int, float]), value=ANY_VALUE)
def test_any_value_is_a_valid_setting_or_one_clear_error(rule, base, value) -> None:
    kind = Annotated[base, rule]
    try:
        got = coerce(value, kind, "x")
    except CalibenchError as exc:
        assert str(exc).startswith("x must be ") and ", got " in str(exc)
        return
    assert type(got) is base and rule.holds(got) and math.isfinite(got)
    assert not isinstance(value, bool) and (base is float or type(value) is int)
