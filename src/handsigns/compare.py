"""``handsigns compare``: one markdown report of a base revision against the workspace — params diff,
metrics diff (quality and runtime) and the plots diff — usable as a pull-request comment.

It wraps DVC's own ``params diff``, ``metrics diff`` and ``plots diff``; the HTML plots report (training
curves and confusion matrices of both revisions side by side) is written next to the markdown and linked.
"""

from __future__ import annotations

import os
from pathlib import Path

from handsigns.errors import UserError
from handsigns.files import write_text
from handsigns.paths import EVAL_DETAILS, QUALITY_METRICS, RUNTIME_FILES, posix
from handsigns.vcs import require_rev, run_dvc


def report(base: str, out: Path, plots: bool = True) -> str:
    if not Path("dvc.yaml").exists():
        raise UserError("dvc.yaml not found; run `handsigns compare` from the project root")
    require_rev(base)
    params = run_dvc(["params", "diff", base, "--md"]) or "_no parameter changed_"
    diff = ["metrics", "diff", base, "--md", "--precision", "4"]
    quality = run_dvc([*diff, "--targets", *posix(QUALITY_METRICS)]) or "_no quality metric changed_"
    runtime = run_dvc([*diff, "--all", "--targets", *posix(RUNTIME_FILES)]) or "_no runtime figures on either side_"
    sections = [
        f"# handsigns: `{base}` → workspace",
        "## Params",
        params,
        "## Quality metrics",
        quality,
        "## Runtime (hardware, software, timing)",
        runtime,
    ]
    if plots:
        plots_dir = out.parent / f"{out.stem}_plots"
        plots_dir.parent.mkdir(parents=True, exist_ok=True)  # dvc plots diff does not create parents
        run_dvc(["plots", "diff", base, "--out", str(plots_dir)])
        sections += [
            "## Plots",
            f"Training curves and confusion matrices of `{base}` and the workspace side by "
            f"side: [{plots_dir.name}/index.html]({plots_dir.name}/index.html)",
        ]
        gallery = EVAL_DETAILS / "misclassified_test.png"
        if gallery.exists():
            sections += [f"![misclassified test images (workspace)]({os.path.relpath(gallery, out.parent)})"]
    text = "\n\n".join(sections) + "\n"
    write_text(out, text)
    return text
