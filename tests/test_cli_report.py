"""``calibench report`` under hostile input: plugin calibrators (``report --plugins``), a
method name that is mathtext, HTML and LaTeX at once, a complete run with NaN test logits, and a
store holding a streamed (ImageNet-layout) run."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from calibench.cli import main

HOSTILE = "$\\nope$_<b>&"
"""A free-text hyperparameter value that is mathtext, HTML and LaTeX at once (registered names
are [a-z0-9_]+, but a plugin's string hyperparameter is free text and labels configurations)."""
LABEL = f"tagged (tag={HOSTILE})"
PLUGINS = {
    "halve.py": '''
from calibench.evaluation.calibrators import Calibrator, register_calibrator
from calibench.evaluation.metrics import softmax


@register_calibrator("halve_logits")
class HalveLogits(Calibrator):
    """softmax(z / 2); nothing is fitted."""

    def _fit(self, logits, labels):
        pass

    def _transform(self, logits):
        return softmax(logits / 2)
''',
    "tagged.py": '''
import torch.nn.functional as F

from calibench import Loss, Method, register_method


@register_method("tagged")
class Tagged(Method):
    """Cross-entropy with a free-text tag."""

    tag: str = "plain"

    def loss(self, model, x, y):
        ce = F.cross_entropy(model(x), y)
        return Loss(ce, {"ce": ce})
''',
}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, Path]:
    """A digits store with one run of ce and one of a plugin method with a free-text tag, and
    the plugin folder that declares the method and a calibrator."""
    tmp = tmp_path_factory.mktemp("hostile")
    plugins = tmp / "plugins"
    plugins.mkdir()
    for name, text in PLUGINS.items():
        (plugins / name).write_text(text)
    out = tmp / "results"
    assert main(["run", "--methods", "ce,tagged", *run_options(out, plugins)]) == 0
    return out, plugins


def run_options(out: Path, plugins: Path) -> list[str]:
    return ["--datasets", "digits", "--epochs", "1", "--device", "cpu", "--plugins", str(plugins),
            "--output", str(out)]  # fmt: skip


def report(out: Path, *extra: str) -> int:
    argv = ["report", "--output", str(out), "--mixing-samples", "50", *extra]
    return main(argv)


def test_plugin_calibrators_appear_in_the_report(store, tmp_path):
    """In a fresh process (this one registered the plugins when it trained), ``report
    --plugins`` must load the folder for its calibrator to be fitted."""
    out, plugins = store
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    command = [sys.executable, "-m", "calibench.cli", "report", "--output", str(copy)]
    command += ["--format", "csv", "--mixing-samples", "0", "--plugins", str(plugins)]
    for extra in ([], ["--calibrators", "halve_logits"]):
        run = subprocess.run([*command, *extra], capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        calibrated = pd.read_csv(copy / "report" / "calibrators.csv")
        assert "halve_logits" in set(calibrated["calibrator"])
    assert set(calibrated["calibrator"]) == {"none", "halve_logits"}


def test_a_hostile_label_is_escaped_in_every_format_and_figure(store, tmp_path):
    out, plugins = store
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    tagged = ["run", "--methods", "tagged", "--set", f"tagged.tag={HOSTILE}"]
    assert main([*tagged, *run_options(copy, plugins)]) == 0
    (weights,) = copy.glob("runs/digits/small_cnn/ce/*/best.pt")
    weights.unlink()
    argv = ["--format", "md,csv,tex,html", "--calibrators", "temperature"]
    assert report(copy, *argv, "--plugins", str(plugins)) == 0
    folder = copy / "report"
    markdown = (folder / "results.md").read_text()
    assert "<b>" not in markdown
    assert "tagged (tag=\\$\\\\nope\\$\\_&lt;b&gt;&amp;)" in markdown
    page = (folder / "index.html").read_text()
    assert "<b>" not in page and "tagged (tag=$\\nope$_&lt;b&gt;&amp;)" in page
    tex = (folder / "results.tex").read_text()
    assert r"tagged (tag=\$\textbackslash{}nope\$\_\textless{}b\textgreater{}\&)" in tex
    assert (folder / "ablation" / "digits_small_cnn_tagged_tag.png").exists()
    assert len(list((folder / "mixing").glob("*.png"))) == 1
    assert len(pd.read_csv(folder / "mixing.csv")) == 2
    skipped = re.search(r"mixing diagnostic of ce skipped: [^<]*", page).group()
    assert "runs/digits/small_cnn/ce/" in skipped and str(copy) not in page
    if shutil.which("pdflatex"):
        (tmp_path / "doc.tex").write_text(
            "\\documentclass{article}\\usepackage{booktabs}\\usepackage{graphicx}"
            f"\\begin{{document}}\\input{{{folder / 'results.tex'}}}\\end{{document}}"
        )
        run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=180)  # fmt: skip
        assert run.returncode == 0, run.stdout[-2000:]


def test_nan_test_logits_leave_that_run_out_with_a_warning(store, tmp_path, capsys):
    out, plugins = store
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (victim,) = [p.parent for p in copy.glob("runs/digits/small_cnn/ce/*/logits.npz")]
    with np.load(victim / "logits.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["test_logits"][3, 1] = np.nan
    np.savez(victim / "logits.npz", **arrays)
    capsys.readouterr()
    assert report(copy, "--format", "md,csv", "--calibrators", "none", "--plugins",
                  str(plugins)) == 0  # fmt: skip
    said = " ".join(capsys.readouterr().out.split())
    assert "warning: run ce / digits / small_cnn / seed 0" in said
    assert "NaN or infinite values in test_logits; left out of this report" in said
    assert str(victim) in said and "--force" in said
    results = pd.read_csv(copy / "report" / "results.csv")
    assert list(results["method"]) == ["tagged"]


IMAGENET_PLUGIN = """
from calibench.data import register_dataset
from calibench.data.imagenet import imagenet_dataset

register_dataset(imagenet_dataset("imagenet_report", num_classes=3, crop_size=16,
                                  resize_size=20, folder_name="imagenet_report"))
"""
WNIDS = ["n01440764", "n01443537", "n01484850"]


def write_imagenet_layout(root: Path, train: int = 6, val: int = 2) -> None:
    """``root/imagenet_report/{train,val}/<wnid>/*.JPEG``: 24x24 images whose channel k is
    bright for class k."""
    import torch
    from torchvision.io import write_jpeg

    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for k, wnid in enumerate(WNIDS):
            folder = root / "imagenet_report" / split / wnid
            folder.mkdir(parents=True)
            for i in range(n):
                image = torch.from_numpy(rng.integers(0, 128, (3, 24, 24), dtype=np.uint8))
                image[k] += 127
                write_jpeg(image, str(folder / f"{wnid}_{i}.JPEG"), quality=95)


def test_a_store_with_a_streamed_run_reports_with_the_mixing_diagnostic(tmp_path):
    data, plugins, out = tmp_path / "data", tmp_path / "plugins", tmp_path / "results"
    write_imagenet_layout(data)
    plugins.mkdir()
    (plugins / "imagenet_report.py").write_text(IMAGENET_PLUGIN)
    common = ["--plugins", str(plugins), "--output", str(out)]
    argv = ["run", "--methods", "ce", "--datasets", "imagenet_report", "--backbones", "small_cnn"]
    argv += [
        "--epochs",
        "1",
        "--set",
        "training.batch_size=4",
        "--set",
        "training.eval_batch_size=5",
    ]
    argv += ["--data-root", str(data), "--device", "cpu"]
    assert main([*argv, *common]) == 0
    assert main(["report", "--format", "md,csv,html", "--calibrators", "temperature", *common]) == 0
    page = (out / "report" / "index.html").read_text()
    assert "mixing diagnostic of ce skipped" not in page
    assert set(pd.read_csv(out / "report" / "mixing.csv")["method"]) == {"ce"}
    assert 'id="diagrams"' in page and 'id="curves"' in page
    results = pd.read_csv(out / "report" / "results.csv")
    assert list(results["dataset"]) == ["imagenet_report"]
