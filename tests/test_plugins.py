"""Plugins against hostile input (issue 19): registered names that could leave the results
folder, and docstrings that rich would read as markup."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import calibench
from calibench import CalibenchError, Method, register_method
from calibench.cli import main
from calibench.config import DEFAULT_CONFIG, Overrides, build_run_specs, load_config
from calibench.evaluation.calibrators import Calibrator, register_calibrator
from calibench.plugins import load_plugin_dir
from calibench.registry import BACKBONES, CALIBRATORS, DATASETS, METHODS, NAME_PATTERN, Registry

BAD_NAMES = ["../..", "a/b", "", "CE", "my-method", "x y", "ce.v2", "timm/resnet18", "é"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_method_names_that_could_leave_the_results_folder_are_refused(name: str) -> None:
    with pytest.raises(CalibenchError, match=r"names may hold only lowercase letters, digits"):
        register_method(name)
    assert name not in METHODS


@pytest.mark.parametrize("registry", [METHODS, CALIBRATORS, DATASETS, BACKBONES])
def test_every_registry_checks_names(registry: Registry) -> None:
    with pytest.raises(CalibenchError, match=rf"cannot register the {registry.kind} name '\.\./x'"):
        registry.add("../x", object(), source="test")
    with pytest.raises(CalibenchError, match=r"\[a-z0-9_\]\+"):
        registry.register("Bad")


def test_calibrator_names_are_checked_at_the_decorator() -> None:
    with pytest.raises(CalibenchError, match="calibrator name 'iso/tonic'"):
        register_calibrator("iso/tonic")
    assert issubclass(CALIBRATORS.get("temperature"), Calibrator)


def test_a_plugin_file_with_a_bad_name_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "escape.py").write_text(
        textwrap.dedent('''
        from calibench import Method, register_method

        @register_method("../../outside")
        class Escape(Method):
            """Tries to put its runs outside --output."""
        ''')
    )
    with pytest.raises(CalibenchError, match="method name '../../outside'"):
        load_plugin_dir(tmp_path)
    assert "../../outside" not in METHODS


NAMES = st.one_of(
    st.text(max_size=10),
    st.from_regex(r"[a-z0-9_]{1,10}", fullmatch=True),
    st.sampled_from([*BAD_NAMES, "ce", "rankmixup_*", "*", "[", "zz?"]),
)


@settings(max_examples=200, deadline=None, database=None)
@given(name=NAMES)
def test_any_method_name_registers_or_is_one_clear_error(name: str) -> None:
    """Registering, looking up and running a method by an arbitrary name: accepted, or one
    CalibenchError; a name is registered exactly when it matches [a-z0-9_]+."""
    existed = name in METHODS
    try:

        @register_method(name)
        class Probe(Method):
            """A probe."""

        registered = not existed
    except CalibenchError:
        registered = False
    try:
        assert registered == (not existed and NAME_PATTERN.fullmatch(name) is not None)
        try:
            assert isinstance(calibench.get_method(name), Method)
        except CalibenchError as exc:
            assert str(exc).strip()
        try:
            specs = build_run_specs(load_config(DEFAULT_CONFIG), Overrides(methods=[name]))
            assert {s.method for s in specs} <= set(METHODS.names())
        except CalibenchError as exc:
            assert str(exc).strip()
    finally:
        if registered:
            METHODS.unregister(name)


MARKUP_PLUGIN = '''
from calibench import Loss, Method, register_method

@register_method("demo_markup")
class DemoMarkup(Method):
    """Mixes x[perm] with [bold]x[/bold], then closes [/] twice [/]."""

@register_method("demo_blank_doc")
class DemoBlankDoc(Method):
    """   """
'''


@pytest.fixture
def markup_plugins(tmp_path: Path):
    (tmp_path / "markup.py").write_text(MARKUP_PLUGIN)
    yield tmp_path
    for name in ("demo_markup", "demo_blank_doc"):
        METHODS.unregister(name)


def test_list_methods_prints_docstrings_as_written(markup_plugins: Path, capsys) -> None:
    assert main(["list", "methods", "--plugins", str(markup_plugins)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Mixes x[perm] with [bold]x[/bold], then closes [/] twice [/]." in out
    assert "demo_blank_doc()" in out
    assert "x' = l x + (1 - l) x[perm]" in out


def test_list_calibrators_and_backbones_print_as_written(capsys) -> None:
    assert main(["list", "calibrators"]) == 0
    assert main(["list", "backbones"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "matrix_odir(reg_lambda=None, reg_mu=None, cv_folds=5, max_iter=1000)" in out
    assert "timm/<name>" in out
