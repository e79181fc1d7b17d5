"""The shareable report: index.html rendered by headless Chromium, results.tex's structure, best
marks and the published-numbers comparison."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_spec

from calibench.cli import main
from calibench.report.latex import escape, latex_report
from calibench.report.published import PUBLISHED, compare_published, load_published
from calibench.report.table import best_marks
from calibench.store.index import Store
from calibench.training.runner import train_run

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
METHODS = ("ce", "mixup")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Two digits runs of one epoch and their full report (every format, published compare)."""
    out = tmp_path_factory.mktemp("report_html")
    store = Store(out)
    for method in METHODS:
        train_run(tiny_spec(method, epochs=1), store)
    argv = ["report", "--output", str(out), "--format", "md,csv,tex,html"]
    assert main([*argv, "--compare", "published"]) == 0
    return out / "report"


class Tables(HTMLParser):
    """Cells of every table of a page: (class, data-sort, text) per cell, per row, per table;
    and the ``src`` of every image."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[tuple[str, str | None, str]]]] = []
        self.images: list[str] = []
        self._cell: list | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = [a.get("class", ""), a.get("data-sort"), ""]
        elif tag == "img":
            self.images.append(a.get("src", ""))

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[2] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(tuple(self._cell))
            self._cell = None


def parse(path) -> Tables:
    parser = Tables()
    parser.feed(path.read_text())
    return parser


def test_one_self_contained_page(report):
    page = (report / "index.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "<link" not in page and "<script src" not in page
    images = parse(report / "index.html").images
    # reliability before/after per method, one training-curve figure per run, one mixing figure
    assert len(images) == 2 * len(METHODS) + len(METHODS) + 1
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for method in METHODS:
        config = next(report.parent.glob(f"runs/digits/small_cnn/{method}/*/config.json"))
        assert json.loads(config.read_text())["method"] == method
        assert f"<details><summary>{method}, seed 0" in page
    assert '<h2 id="published">Published numbers</h2>' in page


def test_figures_on_disk_as_png_and_pdf(report):
    for folder, count in (("diagrams", 2 * len(METHODS)), ("curves", len(METHODS)), ("mixing", 1)):
        pngs = sorted((report / folder).glob("*.png"))
        pdfs = sorted((report / folder).glob("*.pdf"))
        assert len(pngs) == len(pdfs) == count
        assert all(p.read_bytes()[:5] == b"%PDF-" for p in pdfs)
    mixing = pd.read_csv(report / "mixing.csv")
    assert sorted(mixing["method"]) == sorted(METHODS)
    assert mixing["agreement"].between(0, 1).all()


def test_one_seed_marks_nothing(report):
    """With one seed there is no estimate of the noise, so no method is marked at all, neither
    "best" nor "tied" (docs/statistics.md)."""
    summary = pd.read_csv(report / "summary.csv")
    table = parse(report / "index.html").tables[0]
    header = [c[2] for c in table[0]]
    rows = {r[0][2]: r for r in table[1:]}
    for column, label, lower in (("ece", "ECE", True), ("acc", "Acc", False), ("nll", "NLL", True)):
        values = summary.set_index("method")[column]
        best = values.idxmin() if lower else values.idxmax()
        i = header.index(label)
        assert not [m for m, cells in rows.items() if cells[i][0] in ("best", "tied")]
        assert float(rows[best][i][1]) == pytest.approx(values[best])
    assert all(cells[header.index("T")][0] == "" for cells in rows.values())


def chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
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
    assert probe["images"] == 2 * len(METHODS) + len(METHODS) + 1
    assert probe["loaded"] == probe["images"]
    assert probe["errors"] == []
    assert "Uncaught" not in run.stderr
    assert probe["up"] == sorted(probe["up"]) and probe["down"] == sorted(probe["up"])[::-1]
    assert probe["eceUp"] == sorted(probe["eceUp"], key=float)

    shot = tmp_path / "report-screenshot.png"
    run = chromium(
        tmp_path,
        "--hide-scrollbars",
        "--window-size=1400,2400",
        f"--screenshot={shot}",
        (report / "index.html").as_uri(),
    )
    assert shot.exists() and shot.stat().st_size > 20_000, run.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def check_latex_structure(tex: str) -> list[list[str]]:
    """Assert the structure of every tabular of ``tex``; return the body rows' cells."""
    unescaped = tex.replace(r"\{", "").replace(r"\}", "")
    depth = 0
    for ch in unescaped:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    assert not re.search(r"(?<!\\)_", tex), "an underscore is not escaped"
    tabulars = re.findall(r"\\begin\{tabular\}\{([lr]+)\}(.*?)\\end\{tabular\}", tex, re.S)
    assert tabulars
    rows = []
    for spec, body in tabulars:
        assert body.count(r"\toprule") == body.count(r"\midrule") == body.count(r"\bottomrule") == 1
        lines = [ln for ln in body.splitlines() if ln.rstrip().endswith(r"\\")]
        for line in lines:
            cells = [c.strip() for c in re.split(r"(?<!\\)&", line.rstrip()[:-2])]
            assert len(cells) == len(spec), line
            rows.append(cells)
    return rows


def test_results_tex_structure(report):
    tex = (report / "results.tex").read_text()
    rows = check_latex_structure(tex)
    header, body = rows[0], rows[1:]
    assert header[:3] == ["Method", "Epochs", "Seeds"] and "ECE" in header
    ece = [float(re.search(r"[\d.]+", r[header.index("ECE")]).group()) for r in body]
    bold = [r for r in body if r"\mathbf{" in r[header.index("ECE")]]
    tied = [r for r in body if r"\underline{" in r[header.index("ECE")]]
    assert not bold and not tied, "one seed gives no noise estimate, so no method is marked"
    assert len(ece) == len(body)
    assert "## Published numbers" in (report / "results.md").read_text()


def synthetic_summary() -> pd.DataFrame:
    rows = [
        ("cifar10", "resnet50", "ce", 0.950, 0.004, 0.0435, 0.002, 0.80, 0.01, 2.5),
        ("cifar10", "resnet50", "focal_x", 0.940, 0.003, 0.0148, 0.001, 0.85, 0.02, 1.1),
        ("cifar10", "resnet50", "ls", 0.950, 0.001, 0.0296, np.nan, np.nan, np.nan, 0.9),
        ("digits", "small_cnn", "ce", 0.900, 0.010, 0.1000, 0.010, np.nan, np.nan, 1.0),
    ]
    columns = ["dataset", "backbone", "method", "acc", "acc_std", "ece", "ece_std"]
    frame = pd.DataFrame([r[:7] for r in rows], columns=columns).assign(
        ood_svhn_auroc_msp=[r[7] for r in rows],
        ood_svhn_auroc_msp_std=[r[8] for r in rows],
        temperature=[r[9] for r in rows],
        temperature_std=np.nan,
        epochs=[200, 200, 200, 2],
        seeds=[3, 3, 1, 1],
        config_id=["a", "b", "c", "d"],
    )
    return frame


def test_best_marks_golden():
    summary = synthetic_summary()
    marks = best_marks(summary)
    assert list(marks["ece"]) == ["", "best", "", ""]
    assert list(marks["acc"]) == ["tied", "", "tied", ""]
    assert list(marks["ood_svhn_auroc_msp"]) == ["", "best", "", ""]
    assert list(marks["temperature"]) == ["", "", "", ""]


def test_latex_marks_escapes_and_std():
    summary = synthetic_summary()
    tex = latex_report(summary)
    rows = check_latex_structure(tex)
    assert r"focal\_x" in tex and r"small\_cnn" in tex
    assert r"$\mathbf{1.48 \pm 0.10}$" in tex
    assert r"$\underline{95.00 \pm 0.40}$" in tex and r"$\underline{95.00 \pm 0.10}$" in tex
    assert r"$2.96$" in tex
    assert tex.count(r"\begin{table}") == 3
    assert r"\label{tab:cifar10-resnet50-ood}" in tex
    assert sum(1 for r in rows if r[0] == "Method") == 3
    passed = {"ece": pd.Series(["", "", "best", ""], index=summary.index)}
    assert r"$\mathbf{2.96}$" in latex_report(summary, passed)
    assert r"\mathbf{1.48" not in latex_report(summary, passed)


def test_escape_specials():
    assert escape("a_b&c%d$e#f{g}h~i^j\\") == (
        r"a\_b\&c\%d\$e\#f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}"
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


def test_ood_columns_get_their_own_marked_html_table():
    from calibench.report.html import summary_table

    summary = synthetic_summary()
    group = summary[summary["dataset"] == "cifar10"]
    page = Tables()
    page.feed(summary_table(group, ["ood_svhn_auroc_msp"], best_marks(summary)))
    (table,) = page.tables
    assert [c[2] for c in table[0]] == ["method", "epochs", "seeds", "ood_svhn_auroc_msp"]
    cells = {row[0][2]: row[3] for row in table[1:]}
    assert cells["focal_x"] == ("best", "0.85", "0.850 ± 0.020")
    assert cells["ce"] == ("", "0.8", "0.800 ± 0.010")
    assert cells["ls"] == ("", None, "-")
