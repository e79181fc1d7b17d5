"""The plugin files of the README (Writing a dataset, Writing a backbone), extracted and run: a
dataset and a backbone written as plugins train through the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from calibench.cli import main
from calibench.data import load_dataset
from calibench.registry import BACKBONES, DATASETS

DOC = Path(__file__).resolve().parents[1] / "README.md"


def plugin_files() -> dict[str, str]:
    """The ```python blocks of the page whose first line names a plugin file."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    return {
        match.group(1): block
        for block in blocks
        if (match := re.match(r"# plugins/(\w+\.py)\n", block))
    }


@pytest.fixture
def plugins(tmp_path):
    files = plugin_files()
    assert sorted(files) == ["stripes.py", "tiny_mlp.py"]
    for name, text in files.items():
        (tmp_path / "plugins").mkdir(exist_ok=True)
        (tmp_path / "plugins" / name).write_text(text)
    yield tmp_path / "plugins"
    DATASETS.unregister("stripes")
    BACKBONES.unregister("tiny_mlp")
    load_dataset.cache_clear()


def test_the_plugin_dataset_and_backbone_train(plugins, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["run", "--plugins", str(plugins), "--datasets", "stripes", "--backbones", "tiny_mlp"]
    assert main([*argv, "--methods", "ce", "--epochs", "3", "--output", str(out)]) == 0
    (metrics,) = out.glob("runs/stripes/tiny_mlp/ce/*/metrics.json")
    assert json.loads(metrics.read_text())["acc"] > 0.9
    data = load_dataset("stripes", "", False, 0)
    pixels = data.train.images.double() / 255
    spec = DATASETS.get("stripes")
    assert abs(pixels.mean().item() - spec.mean[0]) < 0.01
    assert abs(pixels.std().item() - spec.std[0]) < 0.01
    assert main(["list", "datasets", "--plugins", str(plugins)]) == 0
    assert "stripes: 2 classes, 1x8x8" in capsys.readouterr().out
