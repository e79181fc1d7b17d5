"""The shareable report over a store that has every section: two seeds of two methods with OOD
and shift logits and an ablation. index.html holds every section (rendered by headless
Chromium: no console error, every image loaded), results.tex compiles within the text width,
every format shows the same marks, and the published-numbers comparison."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from calibench.cli import main
from calibench.report.marks import legend
from calibench.report.published import PUBLISHED, compare_published, load_published

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
SECTIONS = (
    "summary",
    "published",
    "calibrators",
    "shift",
    "ood",
    "ablations",
    "diagrams",
    "mixing",
    "curves",
    "runs",
    "glossary",
)
OOD_PLUGIN = '''
import numpy as np

from calibench.data import register_dataset
from calibench.data.base import DatasetSpec, ImageData, Split
from calibench.data.digits import DIGITS, load_digits_data


def load_inverted(request):
    """The digits with every pixel inverted: an OOD set of the digits' shape."""
    data = load_digits_data(request)
    invert = lambda s: Split(255 - s.images, s.labels)
    return ImageData(invert(data.train), invert(data.val), invert(data.test),
                     data.train_indices, data.val_indices, data.class_names)


register_dataset(DatasetSpec(**{**DIGITS.__dict__, "name": "digits_inverted",
                                "load": load_inverted}))
'''
RUNS = 3 * 2
"""ce, mixup and mixup with alpha 0.5, each over seeds 0 and 1 (the verdict rule compares
configurations on the seeds they all share)."""
CONFIGS = 3


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A store with every section the report computes, and its report in every format."""
    tmp = tmp_path_factory.mktemp("report_html")
    plugins = tmp / "plugins"
    plugins.mkdir()
    (plugins / "digits_ood.py").write_text(OOD_PLUGIN)
    out = tmp / "results"
    common = ["--datasets", "digits", "--epochs", "1", "--device", "cpu", "--output", str(out)]
    common += ["--ood", "digits_inverted", "--plugins", str(plugins)]
    shift = ["--shift", "corrupt", "--corruptions", "contrast"]
    assert main(["run", "--methods", "ce,mixup", "--seeds", "0,1", *shift, *common]) == 0
    assert (
        main(["run", "--methods", "mixup", "--seeds", "0,1", "--set", "mixup.alpha=0.5", *common])
        == 0
    )
    argv = ["report", "--output", str(out), "--format", "md,csv,tex,html"]
    argv += ["--compare", "published", "--mixing-samples", "100", "--calibrators", "temperature"]
    assert main(argv) == 0
    return out / "report"


class Page(HTMLParser):
    """Section ids, hrefs, images (src) and table cells (class, data-sort, text) of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.hrefs: list[str] = []
        self.images: list[str] = []
        self.tables: list[list[list[tuple[str, str | None, str]]]] = []
        self._cell: list | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "h2":
            self.ids.append(a.get("id", ""))
        elif tag == "a":
            self.hrefs.append(a.get("href", ""))
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = [a.get("class", ""), a.get("data-sort"), ""]

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[2] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(tuple(self._cell))
            self._cell = None


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text())
    return page


def expected_images(report: Path) -> int:
    """Diagrams before and after TS of each configuration's lowest seed, every run's curves,
    one mixing figure, and every shift and ablation figure."""
    figures = len(list((report / "shift").glob("*.png"))) + len(
        list((report / "ablation").glob("*.png"))
    )
    return 2 * CONFIGS + RUNS + 1 + figures


def test_every_section_is_on_the_one_page(report):
    page = parse(report / "index.html")
    assert page.ids == list(SECTIONS)
    assert [h for h in page.hrefs] == [f"#{s}" for s in SECTIONS]
    text = (report / "index.html").read_text()
    for label in ("Post-hoc calibrators", "Dataset shift per severity", "OOD detection AUROC",
                  "Ablations", "order agreement", "Glossary"):  # fmt: skip
        assert label in text
    assert legend("html") in text


def test_the_page_is_self_contained_with_relative_paths_only(report):
    text = (report / "index.html").read_text()
    assert str(report.parent) not in text and str(report.parent.resolve()) not in text
    assert "docs/" not in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:|/)""", text)
    assert "<link" not in text and "<script src" not in text
    page = parse(report / "index.html")
    assert len(page.images) == expected_images(report)
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for config in report.parent.glob("runs/digits/small_cnn/*/*/config.json"):
        where = config.relative_to(report.parent).as_posix()
        method = json.loads(config.read_text())["method"]
        assert re.search(rf"<summary>{method}, seed \d, run \w+ \({re.escape(where)}\)", text)


def test_figures_on_disk(report):
    for folder, count in (("diagrams", 2 * RUNS), ("curves", RUNS), ("mixing", 1)):
        pngs, pdfs = (
            sorted((report / folder).glob("*.png")),
            sorted((report / folder).glob("*.pdf")),
        )
        assert len(pngs) == len(pdfs) == count
        assert all(p.read_bytes()[:5] == b"%PDF-" for p in pdfs)
    mixing = pd.read_csv(report / "mixing.csv")
    assert len(mixing) == CONFIGS and mixing["agreement"].between(0, 1).all()
    assert sorted(p.name for p in (report / "shift").glob("*.png")) == [
        f"shift_digits-c-calibench_small_cnn_{c}.png" for c in ("none", "temperature")
    ]
    assert [p.name for p in (report / "ablation").glob("*.png")] == [
        "digits_small_cnn_mixup_alpha.png"
    ]


def marks_by_format(report: Path) -> dict[str, list[str]]:
    """The marks of the summary's ECE column in the page, results.md and results.tex, in row
    order ("best", "tied" or "")."""
    table = parse(report / "index.html").tables[0]
    column = [c[2] for c in table[0]].index("ECE")
    html = [row[column][0] for row in table[1:]]
    md_rows = [r for r in (report / "results.md").read_text().splitlines() if r.startswith("| ")]
    md_column = md_rows[0].split(" | ").index("ECE")
    md = [
        "best" if c.startswith("**") else "tied" if c.endswith("≈") else ""
        for c in (r.split(" | ")[md_column] for r in md_rows[1 : 1 + len(html)])
    ]
    tex = (report / "results.tex").read_text().split(r"\midrule")[1].split(r"\bottomrule")[0]
    tex_cells = [ln.split(" & ")[3] for ln in tex.strip().splitlines()]
    latex = ["best" if "mathbf" in c else "tied" if "underline" in c else "" for c in tex_cells]
    return {"html": html, "md": md, "tex": latex}


def test_every_format_shows_the_same_marks_and_the_same_legend(report):
    found = marks_by_format(report)
    assert len(found["html"]) == CONFIGS
    assert found["html"] == found["md"] == found["tex"]
    assert any(found["html"]), "two seeds: the leader of ECE is marked"
    assert legend("md") in (report / "results.md").read_text()
    caption = re.search(r"\\caption\{(.*?)\}\n", (report / "results.tex").read_text()).group(1)
    assert "bold" in caption and "underlined" in caption and "best in bold" not in caption


@pytest.mark.skipif(
    shutil.which("pdflatex") is None, reason="apt-get install texlive-latex-recommended"
)
def test_results_tex_compiles_within_the_text_width(report, tmp_path):
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
        f"\\begin{{document}}\n\\input{{{report / 'results.tex'}}}\n\\end{{document}}\n"
    )
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert run.returncode == 0, log[-3000:]
    assert "Overfull \\hbox" not in log
    assert (tmp_path / "doc.pdf").read_bytes()[:5] == b"%PDF-"


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


PROBE_HEAD = """<script>
window.__errors = [];
window.addEventListener("error", (e) => window.__errors.push(
  e.message || ("failed to load " + (e.target && (e.target.src || e.target.tagName)))), true);
const __consoleError = console.error;
console.error = (...a) => { window.__errors.push(a.join(" ")); __consoleError(...a); };
</script>"""
PROBE_TAIL = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const table = document.querySelector("table.sortable");
  const column = (i) => [...table.tBodies[0].rows].map((r) => r.cells[i].textContent);
  const sortKeys = (i) => [...table.tBodies[0].rows].map((r) => r.cells[i].dataset.sort);
  const headers = [...table.tHead.rows[0].cells];
  const ece = headers.findIndex((h) => h.textContent === "ECE");
  headers[0].click(); const up = column(0);
  headers[0].click(); const down = column(0);
  headers[ece].click(); const eceUp = sortKeys(ece);
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({
    images: images.length,
    loaded: images.filter((i) => i.complete && i.naturalWidth > 0).length,
    sections: [...document.querySelectorAll("h2")].map((h) => h.id),
    tables: [...document.querySelectorAll("h2")].map((h) => {
      const shown = "table, img, p";
      let n = 0;
      for (let e = h.nextElementSibling; e && e.tagName !== "H2"; e = e.nextElementSibling) {
        n += e.matches(shown) + e.querySelectorAll(shown).length;
      }
      return n;
    }),
    errors: window.__errors, up, down, eceUp,
  });
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="headless Chromium is not installed (apt-get install chromium)",
)
def test_page_renders_in_chromium(report, tmp_path):
    assert CHROMIUM is not None, "CI must install chromium (see .ci/run)"
    page = (report / "index.html").read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(
        page.replace("<head>", "<head>" + PROBE_HEAD, 1).replace("</body>", PROBE_TAIL + "</body>")
    )
    run = chromium(tmp_path, "--virtual-time-budget=20000", "--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, re.S)
    assert found, f"the probe did not run: {run.stderr[-2000:]}"
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["errors"] == []
    assert "Uncaught" not in run.stderr
    assert probe["images"] == expected_images(report)
    assert probe["loaded"] == probe["images"]
    assert probe["sections"] == list(SECTIONS)
    assert all(count > 0 for count in probe["tables"]), probe["tables"]
    assert probe["up"] == sorted(probe["up"]) and probe["down"] == sorted(probe["up"])[::-1]
    assert probe["eceUp"] == sorted(probe["eceUp"], key=float)
    shot = tmp_path / "report-screenshot.png"
    run = chromium(tmp_path, "--hide-scrollbars", "--window-size=1400,2400",
                   f"--screenshot={shot}", (report / "index.html").as_uri())  # fmt: skip
    assert shot.exists() and shot.stat().st_size > 20_000, run.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def synthetic_summary() -> pd.DataFrame:
    rows = [
        ("cifar10", "resnet50", "ce", 0.950, 0.004, 0.0435, 0.002, 0.80, 0.01, 2.5),
        ("cifar10", "resnet50", "focal_x", 0.940, 0.003, 0.0148, 0.001, 0.85, 0.02, 1.1),
        ("cifar10", "resnet50", "ls", 0.950, 0.001, 0.0296, np.nan, np.nan, np.nan, 0.9),
        ("digits", "small_cnn", "ce", 0.900, 0.010, 0.1000, 0.010, np.nan, np.nan, 1.0),
    ]
    columns = ["dataset", "backbone", "method", "acc", "acc_std", "ece", "ece_std"]
    return pd.DataFrame([r[:7] for r in rows], columns=columns).assign(
        ood_svhn_auroc_msp=[r[7] for r in rows],
        ood_svhn_auroc_msp_std=[r[8] for r in rows],
        temperature=[r[9] for r in rows],
        temperature_std=np.nan,
        epochs=[200, 200, 200, 2],
        seeds=[3, 3, 1, 1],
        config_id=["a", "b", "c", "d"],
    )


def test_published_file_holds_the_focal_readme_values():
    published = load_published()
    assert set(published["verified"]) == {"yes", "no"}
    verified = published[published["verified"] == "yes"]
    assert verified["source"].str.contains("focal_calibration|by-liu/MbLS@dc86503").all()
    assert (
        not published[published["method"].str.startswith("rankmixup")]["verified"].eq("yes").any()
    )

    def value(backbone, method, metric):
        hit = published[
            (published["source"].str.contains("focal_calibration"))
            & (published["backbone"] == backbone)
            & (published["method"] == method)
            & (published["metric"] == metric)
        ]
        assert len(hit) == 1
        return hit["value"].iloc[0]

    assert value("resnet50", "ce", "ece") == 4.35
    assert value("resnet50", "ce", "temperature") == 2.5
    assert value("wrn26_10", "flsd53", "ece_ts") == 0.84
    assert value("resnet50", "focal", "error") == 5.25
    assert {"cifar10", "tiny_imagenet"} <= set(published["dataset"])
    assert PUBLISHED.name == "published.csv"


def test_compare_published_golden_differences_and_settings():
    summary = synthetic_summary()
    table = pd.DataFrame({"config_id": ["a", "b", "c", "d"], "hparams": ["", "", "alpha=0.1", ""]})
    comparison = compare_published(summary, table)
    ce = comparison[(comparison["method"] == "ce") & comparison["source"].str.contains("focal")]
    by_metric = ce.set_index("metric")
    assert by_metric.loc["error", "measured"] == pytest.approx(5.0)
    assert by_metric.loc["error", "difference"] == pytest.approx(5.0 - 4.95)
    assert by_metric.loc["ece", "difference"] == pytest.approx(4.35 - 4.35)
    assert by_metric.loc["temperature", "difference"] == pytest.approx(0.0)
    assert set(ce["backbone"]) == {"resnet50"}
    assert "epochs 200 here, 350 published" in by_metric.loc["ece", "settings"]
    assert "seeds 3 here, not stated" in by_metric.loc["ece", "settings"]
    ls = comparison[(comparison["method"] == "ls") & (comparison["metric"] == "ece")]
    assert ls["settings"].str.contains("published alpha=0.05, here alpha=0.1").all()
    assert not comparison["method"].isin(["focal_x"]).any()
    assert not (comparison["dataset"] == "digits").any()


def test_compare_published_on_another_backbone_says_so():
    summary = synthetic_summary()
    summary.loc[summary["method"] == "ce", "backbone"] = "resnet18"
    comparison = compare_published(summary)
    ce = comparison[comparison["method"] == "ce"]
    assert {"resnet50", "resnet110", "wrn26_10", "densenet121"} <= set(ce["backbone"])
    assert ce["settings"].str.contains("backbone resnet18 here").all()


def test_published_comparison_renders_signed_differences(report):
    summary = synthetic_summary()
    from calibench.report.published import comparison_table
    from calibench.report.table import markdown

    text = markdown(comparison_table(compare_published(summary)))
    assert "| cifar10 | resnet50 | ce (CE) | error | 4.95 | 5.00 | +0.05 |" in text
    assert (
        "No measured dataset and method has published numbers"
        in (report / "results.md").read_text()
    )
