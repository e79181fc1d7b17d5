"""The verified rows of calibench/report/published.csv against the numbers of their sources."""

from __future__ import annotations

import pytest

from calibench.report.published import compare_published, load_published

MBLS_TEST_MD = "by-liu/MbLS@dc86503 docs/TEST.md"

# The test logs in by-liu/MbLS docs/TEST.md (commit dc86503; the file last changed in f959537),
# one released Tiny-ImageNet ResNet-50 checkpoint per method: acc, ece and aece as printed there
# (fractions, 5 decimals).
MBLS_LOGGED = {
    ("ce", "acc"): 0.65020,
    ("ce", "ece"): 0.03728,
    ("ce", "adaece"): 0.03687,
    ("ls", "acc"): 0.65780,
    ("ls", "ece"): 0.03165,
    ("ls", "adaece"): 0.03159,
    ("focal", "acc"): 0.63090,
    ("focal", "ece"): 0.02958,
    ("focal", "adaece"): 0.03116,
    ("mbls", "acc"): 0.64740,
    ("mbls", "ece"): 0.01641,
    ("mbls", "adaece"): 0.01730,
}


def mbls_rows():
    published = load_published()
    return published[published["source"] == MBLS_TEST_MD]


def test_every_tiny_imagenet_test_md_number_is_a_verified_row():
    rows = mbls_rows()
    assert len(rows) == len(MBLS_LOGGED) == 12
    assert set(rows["dataset"]) == {"tiny_imagenet"}
    assert set(rows["backbone"]) == {"resnet50_tiny"}
    assert rows["verified"].eq("yes").all()
    assert rows["seeds"].eq("1").all()
    assert set(zip(rows["method"], rows["metric"], strict=True)) == set(MBLS_LOGGED)


@pytest.mark.parametrize(("method", "metric"), sorted(MBLS_LOGGED))
def test_test_md_row_is_the_logged_value_in_percent_to_two_decimals(method, metric):
    rows = mbls_rows()
    (value,) = rows[(rows["method"] == method) & (rows["metric"] == metric)]["value"]
    assert value == pytest.approx(100 * MBLS_LOGGED[(method, metric)], abs=0.005 + 1e-9)


def test_rows_not_read_from_a_primary_source_stay_unverified():
    published = load_published()
    verified = published[published["verified"] == "yes"]
    primary = verified["source"].str.contains("focal_calibration") | (
        verified["source"] == MBLS_TEST_MD
    )
    assert primary.all()
    quoted = published[published["source"].str.contains("secondary summar")]
    assert quoted["verified"].eq("no").all()
    tiny = quoted[quoted["dataset"] == "tiny_imagenet"]
    assert set(tiny["method"]) == {"flsd53", "rankmixup_mndcg"}  # not in docs/TEST.md


def test_verified_tiny_imagenet_rows_are_compared_without_the_unverified_note():
    rows = mbls_rows()
    summary = rows[rows["method"] == "mbls"].pivot_table(
        index="method", columns="metric", values="value"
    )
    summary = summary.reset_index().assign(
        dataset="tiny_imagenet",
        backbone="resnet50_tiny",
        config_id="m",
        epochs=100,
        seeds=1,
        acc=lambda t: t["acc"] / 100,
        ece=lambda t: t["ece"] / 100,
        adaece=lambda t: t["adaece"] / 100,
    )
    comparison = compare_published(summary)
    by_metric = comparison.set_index("metric")
    assert set(by_metric.index) == {"acc", "ece", "adaece"}
    assert by_metric["verified"].eq("yes").all()
    assert by_metric["difference"].abs().max() < 1e-9
    assert not by_metric["settings"].str.contains("not verified").any()
    assert not by_metric["settings"].str.contains("seeds").any()
