"""The registry, plugin discovery from folders and entry points, and the method factory."""

from __future__ import annotations

import sys
import textwrap

import pytest

import calibench
from calibench import CalibenchError
from calibench.plugins import load_entry_points, load_plugin_dir
from calibench.registry import METHODS, Registry

PLUGIN = textwrap.dedent('''
    import torch.nn.functional as F
    from calibench import Loss, Method, register_method

    @register_method("{name}")
    class Demo(Method):
        """A demo method: CE times a scale."""
        scale: float = 1.0

        def loss(self, model, x, y):
            ce = F.cross_entropy(model(x), y)
            return Loss(self.scale * ce, {{"ce": ce}})
''')


@pytest.fixture
def cleanup():
    names = []
    yield names
    for name in names:
        METHODS.unregister(name)


def test_unknown_name_lists_valid_choices():
    reg = Registry("widget")
    reg.add("a", object(), source="x")
    reg.add("b", object(), source="y")
    with pytest.raises(CalibenchError, match=r"unknown widget 'c'\. Valid widgets: a, b\."):
        reg.get("c")


def test_names_filter_by_pattern():
    assert calibench.list_methods("rankmixup_*") == ["rankmixup_mndcg", "rankmixup_mrl"]


def test_builtin_methods_are_registered():
    expected = {
        "ce",
        "ls",
        "focal",
        "flsd53",
        "mbls",
        "mixup",
        "rankmixup_mrl",
        "rankmixup_mndcg",
        "regmixup",
        "brier",
        "entropy_penalty",
    }
    assert expected <= set(calibench.list_methods())


def test_plugin_folder_registers_a_method(tmp_path, cleanup):
    (tmp_path / "demo.py").write_text(PLUGIN.format(name="demo_folder"))
    cleanup.append("demo_folder")
    load_plugin_dir(tmp_path)
    method = calibench.get_method("demo_folder", scale=2)
    assert method.scale == 2.0 and method.name == "demo_folder"


def test_name_registered_twice_names_both_sources(tmp_path, cleanup):
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / f"{folder}.py").write_text(PLUGIN.format(name="demo_twice"))
    cleanup.append("demo_twice")
    load_plugin_dir(tmp_path / "one")
    with pytest.raises(CalibenchError, match="registered twice") as err:
        load_plugin_dir(tmp_path / "two")
    assert str(tmp_path / "one" / "one.py") in str(err.value)
    assert str(tmp_path / "two" / "two.py") in str(err.value)


def test_missing_plugin_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CalibenchError, match="does not exist"):
        load_plugin_dir(tmp_path / "nope")


def test_broken_plugin_file_is_a_clear_error(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(CalibenchError, match="broken.py failed to import.*boom"):
        load_plugin_dir(tmp_path)


def test_entry_point_plugin_is_loaded(tmp_path, monkeypatch, cleanup):
    """An installed distribution declaring the calibench.methods entry point group."""
    (tmp_path / "calibench_demo_ep.py").write_text(PLUGIN.format(name="demo_entry_point"))
    dist = tmp_path / "calibench_demo_ep-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: calibench-demo-ep\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[calibench.methods]\ndemo = calibench_demo_ep\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cleanup.append("demo_entry_point")
    load_entry_points()
    assert "demo_entry_point" in calibench.list_methods()
    sys.modules.pop("calibench_demo_ep", None)


def test_get_method_rejects_unknown_hyperparameter():
    with pytest.raises(CalibenchError, match="no hyperparameter bogus. Valid: margin, alpha"):
        calibench.get_method("mbls", bogus=1)


def test_get_method_checks_types():
    with pytest.raises(CalibenchError, match="num_mixup must be an integer"):
        calibench.get_method("rankmixup_mndcg", num_mixup=1.5)
    with pytest.raises(CalibenchError, match="confidence must be one of 'logit', 'prob'"):
        calibench.get_method("rankmixup_mrl", confidence="bogus")
    assert calibench.get_method("focal", gamma=2).gamma == 2.0
