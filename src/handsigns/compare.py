"""``handsigns compare``: one markdown report of a base revision against the workspace — params diff,
metrics diff (quality and runtime) and the plots diff — usable as a pull-request comment.

It wraps DVC's own ``params diff``, ``metrics diff`` and ``plots diff``; the HTML plots report (training
curves and confusion matrices of both revisions side by side) is written next to the markdown and linked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from handsigns.atomic import write_text
from handsigns.errors import UserError
from handsigns.gate import QUALITY_FILES, RUNTIME_FILES


def dvc_path() -> str:
    beside = Path(sys.executable).with_name("dvc")
    found = str(beside) if beside.exists() else shutil.which("dvc")
    if not found:
        raise UserError("dvc not found; run inside the project's environment (make repro installs it)")
    return found


def run_dvc(args: list[str]) -> str:
    """stdout of `dvc ARGS` (the environment's dvc); a failure is one UserError with DVC's own message."""
    proc = subprocess.run([dvc_path(), *args], capture_output=True, text=True, check=False,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
        detail = (errors or proc.stderr.strip().splitlines() or ["(no message)"])[0]
        raise UserError(f"`dvc {' '.join(args)}` failed: {detail}")
    return proc.stdout.strip()


def require_rev(rev: str) -> None:
    """A UserError unless ``rev`` names a commit of this repository."""
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                           capture_output=True, check=False).returncode == 0
    if not found:
        raise UserError(f"git revision {rev!r} not found; pass --base with a branch, tag or commit")


def report(base: str, out: Path, plots: bool = True) -> str:
    if not Path("dvc.yaml").exists():
        raise UserError("dvc.yaml not found; run `handsigns compare` from the project root")
    require_rev(base)
    params = run_dvc(["params", "diff", base, "--md"]) or "_no parameter changed_"
    quality = run_dvc(["metrics", "diff", base, "--md", "--precision", "4", "--targets", *QUALITY_FILES]) \
        or "_no quality metric changed_"
    runtime = run_dvc(["metrics", "diff", base, "--md", "--precision", "4", "--all", "--targets", *RUNTIME_FILES]) \
        or "_no runtime figures on either side_"
    sections = [f"# handsigns: `{base}` → workspace", "## Params", params, "## Quality metrics", quality,
                "## Runtime (hardware, software, timing)", runtime]
    if plots:
        plots_dir = out.parent / f"{out.stem}_plots"
        plots_dir.parent.mkdir(parents=True, exist_ok=True)  # dvc plots diff does not create parents
        run_dvc(["plots", "diff", base, "--out", str(plots_dir)])
        sections += ["## Plots", f"Training curves and confusion matrices of `{base}` and the workspace side by "
                     f"side: [{plots_dir.name}/index.html]({plots_dir.name}/index.html)"]
        gallery = Path("metrics/eval/misclassified_test.png")
        if gallery.exists():
            sections += [f"![misclassified test images (workspace)]({os.path.relpath(gallery, out.parent)})"]
    text = "\n\n".join(sections) + "\n"
    write_text(out, text)
    return text
