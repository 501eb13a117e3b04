"""`handsigns compare` on two revisions of a temporary DVC repository: the report as the PR comment CI posts."""

import json
import sys

import pytest

from handsigns.fingerprint import DECIDING_KEYS

from conftest import make_project, run
from helpers.github_markdown import assert_github_markdown, mermaid_charts

pytestmark = pytest.mark.slow  # DVC subprocesses on a git repository

MARKER = "<!-- handsigns-compare -->"
FINGERPRINT = {k: f"v-{k}" for k in DECIDING_KEYS} | {"device_name": "AMD EPYC", "torch_threads": 2, "cpu_cores": 2}
TEST_IMAGES = [(f"test/{c}_{i}.jpg", str(c)) for c in range(3) for i in range(4)]


def _write_metrics(repo, test_acc: float, seconds: float, wrong: int = 0, **fingerprint) -> None:
    """A run's outputs as the pipeline lays them out; the first ``wrong`` test images predicted as class 2."""
    val = repo / "metrics/train/plots/metrics/val"
    val.mkdir(parents=True, exist_ok=True)
    (val / "accuracy.tsv").write_text(f"step\taccuracy\n1\t0.5\n2\t0.8\n3\t{test_acc}\n")
    (val / "loss.tsv").write_text(f"step\tloss\n1\t1.2\n2\t0.7\n3\t{1 - test_acc}\n")
    (repo / "metrics/eval").mkdir(parents=True, exist_ok=True)
    rows = [f"{p},{a},{'2' if i < wrong else a},0.9\n" for i, (p, a) in enumerate(TEST_IMAGES)]
    (repo / "metrics/eval/predictions_test.csv").write_text("path,actual,predicted,probability\n" + "".join(rows))
    (repo / "metrics/eval.json").write_text(json.dumps({"test": {"accuracy": test_acc}, "val": {"accuracy": 0.9}}))
    (repo / "metrics/runtime.json").write_text(json.dumps({"train_seconds": seconds, "train_images_per_s": 500.0}))
    (repo / "metrics/fingerprint.json").write_text(json.dumps(FINGERPRINT | fingerprint))


def _project_with_a_base_run(tmp_path):
    repo = make_project(tmp_path / "repo", {"source": "unused.zip"}, git=True)
    _write_metrics(repo, 0.95, 100.0, wrong=2)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "base run"], repo)
    return repo


def _compare(repo, *args):
    return run(
        [sys.executable, "-m", "handsigns.cli", "compare", "--base", "HEAD", "--out", "out/report.md", *args], repo
    )


def _section(text: str, heading: str) -> str:
    return text.split(f"\n## {heading}\n")[1].split("\n## ")[0].strip()


def test_compare_reports_every_change_in_markdown_github_renders(tmp_path):
    repo = _project_with_a_base_run(tmp_path)
    _write_metrics(repo, 0.97, 80.0, wrong=1, device_name="Intel Xeon", cpu_cores=16)  # cores: not deciding
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text().replace("lr: 0.003", "lr: 0.01"))
    url = "https://github.com/o/r/actions/runs/1/artifacts/2"

    proc = _compare(repo, "--artifact-url", url)
    text = (repo / "out/report.md").read_text()
    assert text == proc.stdout
    assert text.splitlines()[0] == MARKER  # how CI finds its own comment to edit it
    html = assert_github_markdown(text)  # no relative link or image; parses; Mermaid blocks well-formed
    assert html.count("<table>") == 5  # params, metrics, runtime, confusion matrix, changed predictions
    assert len(text) < 65_536

    assert text.splitlines()[1:4] == [
        "# handsigns: `HEAD` → workspace",
        "",
        "test accuracy 0.9500 → **0.9700** (+0.0200) · val accuracy **0.9000** (no change)",
    ]
    params = _section(text, "Params")
    assert "lr" in params and "0.003" in params and "0.01" in params
    quality = _section(text, "Quality metrics")
    assert "test.accuracy" in quality and "0.95" in quality and "0.97" in quality and "0.02" in quality
    assert "val.accuracy" not in quality  # unchanged metrics are left out

    runtime = _section(text, "Runtime")
    rows = [line for line in runtime.splitlines() if line.startswith("| ")]
    assert rows == ["| key | `HEAD` | workspace |", "| device_name | AMD EPYC | Intel Xeon |"]  # only what differs
    assert runtime.rstrip().endswith("Timing: train 80.0 s, 500.0 images/s (`HEAD`: train 100.0 s, 500.0 images/s).")

    charts = mermaid_charts(_section(text, "Val curves per epoch"))
    assert [c["title"] for c in charts] == ["val accuracy", "val loss"]
    assert charts[0]["lines"] == [[0.5, 0.8, 0.95], [0.5, 0.8, 0.97]]  # base, then workspace
    assert charts[1]["lines"] == [[1.2, 0.7, 0.05], [1.2, 0.7, 0.03]]

    predictions = _section(text, "Test predictions")
    assert "| **0** | **3** (2) | · | **1** (2) |" in predictions  # one class-0 image now right
    assert "| **1** | · | 4 | · |" in predictions
    assert "1 of 12 test images changed their predicted class: 1 now right, 0 no longer right." in predictions
    assert "| `test/0_1.jpg` | 0 | 2 ✗ | 0 ✓ |" in predictions

    plots = _section(text, "Plots")
    assert (repo / "out/report_plots/index.html").exists()
    assert "`out/report_plots/index.html`" in plots  # named in words, never linked relatively
    assert f"[the artifact]({url})" in plots


def test_compare_with_nothing_changed_says_so(tmp_path):
    repo = _project_with_a_base_run(tmp_path)
    (repo / "metrics/runtime.json").write_text(json.dumps({"train_seconds": 90.0}))  # timings differ run to run
    (repo / "metrics/fingerprint.json").write_text(json.dumps(FINGERPRINT | {"cpu_cores": 64}))

    text = _compare(repo, "--no-plots").stdout
    assert text.splitlines()[0] == MARKER
    assert_github_markdown(text)
    assert "val accuracy **0.9000** (no change)" in text
    assert _section(text, "Params").strip() == "No parameter changed against `HEAD`."
    assert _section(text, "Quality metrics").strip() == "No quality metric changed against `HEAD`."
    runtime = _section(text, "Runtime")
    assert "|" not in runtime and runtime.startswith("Same machine and software as `HEAD`")
    assert "Timing: train 90.0 s (`HEAD`: train 100.0 s, 500.0 images/s)." in runtime
    assert "val accuracy: the same curve on both sides" in text
    predictions = _section(text, "Test predictions")
    assert (
        "the same as `HEAD`'s" in predictions
        and "No test image changed its predicted class (12 compared)." in predictions
    )
    assert not (repo / "out/report_plots").exists()
    assert "index.html" not in text


def test_compare_with_an_unknown_base_or_a_relative_artifact_url_is_one_clear_error(tmp_path):
    repo = make_project(tmp_path / "repo", {"source": "unused.zip"}, git=True)
    proc = run([sys.executable, "-m", "handsigns.cli", "compare", "--base", "no-such-branch"], repo, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: git revision 'no-such-branch' not found; pass --base with a branch, tag or commit"
    )
    proc = run([sys.executable, "-m", "handsigns.cli", "compare", "--artifact-url", "reports/"], repo, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --artifact-url must be an absolute http(s) URL, got 'reports/'"
