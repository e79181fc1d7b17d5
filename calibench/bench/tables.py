"""The bench's results as rich tables: each method's step cost (:func:`bench_table`) and the
comparison with the reference pipeline (:func:`comparison_table`)."""

from __future__ import annotations

from rich.table import Table

from calibench.bench.compare import Comparison, PathStats
from calibench.bench.steps import BenchRow

STEP_COLUMNS = (
    "method",
    "forward calls",
    "images through model / batch",
    "step",
    "model fwd/bwd + optimiser",
    "method's loss work",
)


def bench_table(rows: list[BenchRow], title: str) -> Table:
    """Milliseconds per training step of each method: the whole step, the model's part and the
    method's own loss work, and the step over the baseline's (``ce`` when timed, else the
    first method)."""
    base = next((r for r in rows if r.method == "ce"), rows[0])
    table = Table(title=title)
    for column in (*STEP_COLUMNS, f"step / {base.method} step"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for r in rows:
        table.add_row(
            r.method,
            str(r.forward_passes),
            f"{r.samples_per_input:.0f}x",
            f"{r.step_ms:.2f}",
            f"{r.model_ms:.2f}",
            f"{r.loss_ms:.2f}",
            f"{r.step_ms / base.step_ms:.2f}x",
        )
    return table


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f}"


def _comparison_title(s: dict) -> str:
    return (
        f"calibench ({s['precision']}) vs reference pipeline (fp32, {s['num_workers']} "
        f"workers): {s['backbone']} on {s['data']} {s['dataset']} data, batch {s['batch_size']}, "
        f"{s['device_name']} ({s['device']}, {s['torch_threads']} threads), median of "
        f"{s['blocks']} alternating blocks of {s['steps_per_block']} steps"
    )


def comparison_table(comparison: Comparison) -> Table:
    """A rich table of a comparison: images/s, ratio, peak memory, FLOPs and their rate (MFU on
    CUDA, GFLOP/s on the CPU)."""
    s = comparison.setup
    cuda = s["device"].startswith("cuda")
    table = Table(
        title=_comparison_title(s),
        caption=f"images/s counts input images (not mixed copies). Peak memory: "
        f"{s['memory_measure']}.",
    )
    rate = "MFU" if cuda else "GFLOP/s"
    columns = (
        "method",
        "calibench img/s",
        "reference img/s",
        "calibench / reference",
        "calibench peak MiB",
        "reference peak MiB",
        "GFLOP / step",
        f"calibench {rate}",
        f"reference {rate}",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "method" else "right")

    def speed(p: PathStats) -> str:
        if not cuda:
            return f"{p.flops_per_s / 1e9:.1f}"
        return "-" if p.mfu is None else f"{100 * p.mfu:.1f}%"

    for r in comparison.rows:
        table.add_row(
            r.method,
            f"{r.calibench.images_per_s:.0f}",
            f"{r.reference.images_per_s:.0f}",
            f"{r.ratio:.2f}x",
            _mib(r.calibench.peak_memory_bytes),
            _mib(r.reference.peak_memory_bytes),
            f"{r.flops_per_step / 1e9:.2f}",
            speed(r.calibench),
            speed(r.reference),
        )
    return table
