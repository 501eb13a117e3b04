"""``handsigns compare``: one markdown report of a base revision against the workspace, made to be posted as a
pull-request comment on github.com, so nothing in it needs a file left on the machine that wrote it.

In order: a hidden marker line (CI finds its own comment by it, to edit it in place), a headline of test and
val accuracy, the params and quality-metrics diffs (DVC's own ``params diff`` and ``metrics diff``, or one
sentence when nothing changed), the runtime (timings in one line; the fingerprint's deciding keys only where
they differ from the base's), val accuracy and loss per epoch as Mermaid ``xychart-beta`` charts (GitHub draws
them), the test confusion matrix as a table, and the test images whose prediction changed.

DVC's ``plots diff`` HTML is still written beside the report (CI uploads that folder as an artifact); the
report names it in words, and links only to an absolute ``artifact_url``. The params, quality metrics, runtime
and test predictions sections are each cut to ``SECTION_LIMIT`` characters, the charts hold at most
``MAX_POINTS`` points a line and the changed predictions ``MAX_CHANGED`` rows, and the headline and the plots
section are a few lines: the whole report stays under GitHub's comment limit.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

from handsigns.errors import UserError
from handsigns.files import write_text
from handsigns.fingerprint import DECIDING_KEYS, class_changes
from handsigns.paths import CURVES, EVAL_DETAILS, EVAL_METRICS, FINGERPRINT, QUALITY_METRICS, RUNTIME, posix
from handsigns.vcs import require_rev, run_dvc, text_at

T = TypeVar("T")
MARKER = "<!-- handsigns-compare -->"
COMMENT_LIMIT = 65_536  # characters GitHub accepts in one comment body
SECTION_LIMIT = 8_000  # per capped section (4), with the charts (bounded by MAX_POINTS): under COMMENT_LIMIT
MAX_POINTS = 100  # per chart line; more epochs are decimated to every k-th
MAX_CHANGED = 25  # rows of the changed-predictions table
# DVCLive's layout under CURVES (train stage: Live(CURVES)): plots/metrics/<split>/<name>.tsv, columns step, <name>
CURVE_FILES = {name: CURVES / "plots" / "metrics" / "val" / f"{name}.tsv" for name in ("accuracy", "loss")}
PREDICTIONS = EVAL_DETAILS / "predictions_test.csv"  # path, actual, predicted, probability (evaluate stage)
GALLERY = EVAL_DETAILS / "misclassified_test.png"
# Mermaid's xychart has no legend: fixed colours (readable on GitHub's light and dark themes) let the text say
# which line is which. Orange, then blue: the base is drawn first.
BASE_COLOUR, WORK_COLOUR = "#e16f24", "#0969da"


def report(base: str, out: Path, plots: bool = True, artifact_url: str | None = None) -> str:
    if not Path("dvc.yaml").exists():
        raise UserError("dvc.yaml not found; run `handsigns compare` from the project root")
    if artifact_url is not None and not artifact_url.startswith(("https://", "http://")):
        raise UserError(f"--artifact-url must be an absolute http(s) URL, got {artifact_url!r}")
    require_rev(base)
    b = f"`{base}`"

    def both(path: Path) -> tuple[str | None, str | None]:
        return text_at(base, path.as_posix()), text_at(None, path.as_posix())

    params = run_dvc(["params", "diff", base, "--md"])
    diff = ["metrics", "diff", base, "--md", "--precision", "4"]
    quality = run_dvc([*diff, "--targets", *posix(QUALITY_METRICS)])
    sections = [
        f"{MARKER}\n# handsigns: {b} → workspace\n\n{headline(*_each(_json, both(EVAL_METRICS)), base)}",
        "## Params\n\n" + _cap(table_or(params, f"No parameter changed against {b}.")),
        "## Quality metrics\n\n" + _cap(table_or(quality, f"No quality metric changed against {b}.")),
        "## Runtime\n\n" + _cap(runtime_section(*_each(_json, both(FINGERPRINT)), *_each(_json, both(RUNTIME)), base)),
        "## Val curves per epoch\n\n" + curves_section({n: both(p) for n, p in CURVE_FILES.items()}, base),
        "## Test predictions\n\n" + _cap(predictions_section(*_each(_rows, both(PREDICTIONS)), base)),
    ]
    more = []
    if plots:
        plots_dir = out.parent / f"{out.stem}_plots"
        plots_dir.parent.mkdir(parents=True, exist_ok=True)  # dvc plots diff does not create parents
        run_dvc(["plots", "diff", base, "--out", str(plots_dir)])
        more.append(
            f"`dvc plots diff` wrote the full plots of {b} and the workspace side by side (train and val curves, "
            "both confusion matrices, per-class F1, the misclassified test images of each) to "
            f"`{(plots_dir / 'index.html').as_posix()}`, beside this report."
        )
    elif GALLERY.exists():
        more.append(f"The misclassified test images of the workspace are in `{GALLERY.as_posix()}`.")
    if artifact_url:
        more.append(f"This run's reports, to download: [the artifact]({artifact_url}).")
    if more:
        sections.append("## Plots\n\n" + "\n\n".join(more))
    text = "\n\n".join(sections) + "\n"
    write_text(out, text)
    return text


# ------------------------------------------------------------------------------------------------ sections


def headline(base_eval: dict | None, work_eval: dict | None, base: str) -> str:
    """One line: test and val accuracy, base → workspace."""
    if work_eval is None:
        return f"The workspace has no `{EVAL_METRICS.as_posix()}` (the pipeline has not run)."
    parts = []
    for split in ("test", "val"):
        now = (work_eval.get(split) or {}).get("accuracy")
        then = ((base_eval or {}).get(split) or {}).get("accuracy")
        if now is None:
            continue
        if then is None:
            parts.append(f"{split} accuracy **{now:.4f}** (`{base}` has none)")
        elif then == now:
            parts.append(f"{split} accuracy **{now:.4f}** (no change)")
        else:
            parts.append(f"{split} accuracy {then:.4f} → **{now:.4f}** ({now - then:+.4f})")
    return " · ".join(parts) or f"`{EVAL_METRICS.as_posix()}` holds no accuracy."


def table_or(table: str, sentence: str) -> str:
    """DVC's ``--md`` table, or ``sentence`` when it has no rows (DVC prints the header alone, or nothing)."""
    return table if len(table.strip().splitlines()) > 2 else sentence


def runtime_section(
    base_fp: dict | None, work_fp: dict | None, base_rt: dict | None, work_rt: dict | None, base: str
) -> str:
    """The timings in one line; the fingerprint's deciding keys (fingerprint.DECIDING_KEYS) only where the
    workspace's differ from the base's: then the last bits of a float sum may legitimately differ too."""
    b = f"`{base}`"
    if base_fp is None or work_fp is None:
        side = b if base_fp is None else "the workspace"
        text = f"{side} has no `{FINGERPRINT.as_posix()}`: the machines are not compared."
    else:
        differ = class_changes(base_fp, work_fp)
        if not differ:
            text = (
                f"Same machine and software as {b}: the {len(DECIDING_KEYS)} fingerprint keys that decide a run's "
                "bytes (device, CPU/GPU, threads, precision, torch, libraries) match."
            )
        else:
            rows = "\n".join(f"| {k} | {_cell(base_fp.get(k))} | {_cell(work_fp.get(k))} |" for k in differ)
            text = (
                f"The machine or software differs from {b}'s in {len(differ)} of the {len(DECIDING_KEYS)} "
                "fingerprint keys that decide a run's bytes, so the last bits of its figures may differ too:\n\n"
                f"| key | {b} | workspace |\n|---|---|---|\n{rows}"
            )
    return f"{text}\n\n{timings(base_rt, work_rt, base)}"


def timings(base_rt: dict | None, work_rt: dict | None, base: str) -> str:
    def line(rt: dict) -> str:
        out = [f"train {rt['train_seconds']:.1f} s" if "train_seconds" in rt else "train time unknown"]
        if "train_images_per_s" in rt:
            out.append(f"{rt['train_images_per_s']:.1f} images/s")
        if rt.get("world_size", 1) != 1:
            out.append(f"{rt['world_size']} processes")
        return ", ".join(out)

    if work_rt is None:
        return f"The workspace has no `{RUNTIME.as_posix()}`."
    then = f"`{base}`: {line(base_rt)}" if base_rt is not None else f"`{base}` has no timings"
    # Wall-clock on a shared machine: shown for scale, never a verdict.
    return f"Timing: {line(work_rt)} ({then})."


def curves_section(texts: dict[str, tuple[str | None, str | None]], base: str) -> str:
    """A Mermaid chart per metric, the base's line and the workspace's over the same epochs; a chart per
    revision when their epochs differ (an xychart line has a value at every x, no gaps)."""
    blocks, notes = [], []
    for name, (base_text, work_text) in texts.items():
        then, now = parse_curve(base_text), parse_curve(work_text)
        series = [(f"`{base}`", BASE_COLOUR, then), ("the workspace", WORK_COLOUR, now)]
        missing = [label for label, _, points in series if not points]
        series = [s for s in series if s[2]]
        bad = [label for label, _, points in series if not all(math.isfinite(v) for _, v in points)]
        if not series or bad:
            why = f"{' and '.join(bad)} has non-finite values" if bad else "no curve on either side"
            notes.append(f"val {name}: not drawn, {why}.")
            continue
        if missing:
            notes.append(f"val {name}: {' and '.join(missing)} has no curve.")
        if then == now:
            notes.append(f"val {name}: the same curve on both sides (the blue line hides the orange).")
        if len(series) == 2 and [s for s, _ in then] != [s for s, _ in now]:
            y_range = axis_range([v for _, _, points in series for _, v in points])  # shared: comparable
            blocks += [mermaid_chart(f"val {name}: {s[0].strip('`')}", name, [s], y_range) for s in series]
        else:
            blocks.append(mermaid_chart(f"val {name}", name, series))
    return "\n\n".join([f"Orange: `{base}`; blue: the workspace.", *blocks, *notes])


def parse_curve(text: str | None) -> list[tuple[int, float]]:
    """(step, value) rows of a DVCLive TSV (header ``step\\t<name>``)."""
    if not text:
        return []
    rows = list(csv.reader(io.StringIO(text), delimiter="\t"))[1:]
    return [(int(r[0]), float(r[1])) for r in rows if len(r) >= 2]


def decimate(points: list[tuple[int, float]], cap: int = MAX_POINTS) -> list[tuple[int, float]]:
    """Every k-th point, k the smallest that leaves at most ``cap``: evenly spaced still."""
    return points[:: math.ceil(len(points) / cap)] if len(points) > cap else points


def axis_range(values: list[float]) -> tuple[float, float]:
    """The multiples of 0.05 around ``values``."""
    lo, hi = math.floor(min(values) * 20) / 20, math.ceil(max(values) * 20) / 20
    return lo, (hi if hi > lo else lo + 0.05)


def mermaid_chart(
    title: str,
    name: str,
    series: list[tuple[str, str, list[tuple[int, float]]]],
    y_range: tuple[float, float] | None = None,
) -> str:
    """A fenced ``mermaid`` xychart-beta block: one line per series, all over the same steps."""
    kept = [(label, colour, decimate(points)) for label, colour, points in series]
    steps = [s for s, _ in kept[0][2]]
    lo, hi = y_range or axis_range([v for *_, points in kept for _, v in points])
    even = len(steps) > 1 and len({b - a for a, b in pairwise(steps)}) == 1
    # A numeric x-axis spreads a line's values evenly from min to max: right only for evenly spaced steps;
    # otherwise each step is a category.
    x_axis = f"{steps[0]} --> {steps[-1]}" if even else "[" + ", ".join(f'"{s}"' for s in steps) + "]"
    palette = ", ".join(colour for _, colour, _ in kept)
    lines = [
        "```mermaid",
        f'%%{{init: {{"themeVariables": {{"xyChart": {{"plotColorPalette": "{palette}"}}}}}}}}%%',
        "xychart-beta",
        f'    title "{title.replace(chr(34), chr(39))}"',
        f'    x-axis "epoch" {x_axis}',
        f'    y-axis "{name}" {_num(lo)} --> {_num(hi)}',
        *(f"    line [{', '.join(_num(v) for _, v in points)}]" for *_, points in kept),
        "```",
    ]
    return "\n".join(lines)


def predictions_section(
    base_rows: dict[str, tuple[str, str]] | None, work_rows: dict[str, tuple[str, str]] | None, base: str
) -> str:
    """The workspace's test confusion matrix (the base's count beside each cell that changed), then the test
    images whose predicted class changed."""
    name = f"`{PREDICTIONS.as_posix()}`"
    if work_rows is None:
        return f"The workspace has no {name}."
    parts = [confusion_table(base_rows, work_rows, base)]
    if base_rows is None:
        parts.append(f"`{base}` has no {name}: no per-image comparison.")
    else:
        parts.append(changed_predictions(base_rows, work_rows, base))
    return "\n\n".join(parts)


def confusion_table(
    base_rows: dict[str, tuple[str, str]] | None, work_rows: dict[str, tuple[str, str]], base: str
) -> str:
    now, then = _counts(work_rows), _counts(base_rows or {})
    classes = sorted({c for pair in [*now, *then] for c in pair}, key=_class_order)
    changed = base_rows is not None and now != then

    def cell(a: str, p: str) -> str:
        n, b = now.get((a, p), 0), then.get((a, p), 0)
        shown = str(n) if n else "·"
        return f"**{shown}** ({b})" if changed and n != b else shown

    head = "| actual ╲ predicted | " + " | ".join(_cell(c) for c in classes) + " |"
    rule = "|---|" + "---:|" * len(classes)
    rows = [f"| **{_cell(a)}** | " + " | ".join(cell(a, p) for p in classes) + " |" for a in classes]
    if base_rows is None:
        caption = "Test confusion matrix of the workspace (rows: actual class, columns: predicted; · is 0)."
    elif changed:
        caption = (
            "Test confusion matrix of the workspace (rows: actual class, columns: predicted; · is 0). "
            f"A cell that changed is bold, with `{base}`'s count in brackets."
        )
    else:
        caption = f"Test confusion matrix (rows: actual class, columns: predicted; · is 0): the same as `{base}`'s."
    return "\n".join([caption, "", head, rule, *rows])


def changed_predictions(
    base_rows: dict[str, tuple[str, str]], work_rows: dict[str, tuple[str, str]], base: str, cap: int = MAX_CHANGED
) -> str:
    common = [p for p in work_rows if p in base_rows]
    moved = [p for p in common if base_rows[p][1] != work_rows[p][1]]
    only_base, only_work = len(base_rows) - len(common), len(work_rows) - len(common)
    split = (
        f"The test split differs: {only_base} images only in `{base}`, {only_work} only in the workspace; "
        f"compared on the {len(common)} in both. "
        if only_base or only_work
        else ""
    )
    if not moved:
        return f"{split}No test image changed its predicted class ({len(common)} compared)."
    right = sum(work_rows[p][1] == work_rows[p][0] for p in moved)
    wrong = sum(base_rows[p][1] == base_rows[p][0] for p in moved)

    def mark(actual: str, predicted: str) -> str:
        return f"{_cell(predicted)} {'✓' if predicted == actual else '✗'}"

    rows = [
        f"| `{_cell(p)}` | {_cell(work_rows[p][0])} | {mark(work_rows[p][0], base_rows[p][1])} "
        f"| {mark(work_rows[p][0], work_rows[p][1])} |"
        for p in moved[:cap]
    ]
    more = ["", f"… and {len(moved) - cap} more."] if len(moved) > cap else []
    return "\n".join(
        [
            f"{split}{len(moved)} of {len(common)} test images changed their predicted class: {right} now right, "
            f"{wrong} no longer right.",
            "",
            f"| image | actual | `{base}` | workspace |",
            "|---|---|---|---|",
            *rows,
            *more,
        ]
    )


# ------------------------------------------------------------------------------------------------ helpers


def _each(read: Callable[[str | None], T], texts: tuple[str | None, str | None]) -> tuple[T, T]:
    """``read`` of the base's text and of the workspace's: a pair of fixed length, as ``map`` is not."""
    return read(texts[0]), read(texts[1])


def _json(text: str | None) -> Any:
    return json.loads(text) if text else None


def read_predictions(text: str) -> dict[str, tuple[str, str]]:
    """path -> (actual, predicted) of a predictions CSV (the evaluate stage's, one row per image)."""
    return {r["path"]: (r["actual"], r["predicted"]) for r in csv.DictReader(io.StringIO(text))}


def _rows(text: str | None) -> dict[str, tuple[str, str]] | None:
    return None if text is None else read_predictions(text)


def _counts(rows: dict[str, tuple[str, str]]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for pair in rows.values():
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def _class_order(name: str) -> tuple[int, int, str]:
    """Numeric class names in numeric order (2 before 10), then the rest by name."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _num(value: float) -> str:
    """A plain decimal (4 places, trailing zeros dropped): Mermaid reads no exponent."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _cell(value: Any) -> str:
    """A value safe inside a markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _cap(text: str, limit: int = SECTION_LIMIT) -> str:
    """``text`` cut at a line boundary to fit ``limit`` characters, saying how many lines were left out."""
    if len(text) <= limit:
        return text
    lines, kept, size = text.splitlines(), [], 0
    for line in lines:
        if size + len(line) + 1 > limit - 100:
            break
        kept.append(line)
        size += len(line) + 1
    # The blank line ends a table: a line straight after one would be read as another row.
    return "\n".join([*kept, "", f"… {len(lines) - len(kept)} more lines left out to fit a GitHub comment."])
