"""The pieces of `handsigns compare`'s report, without git or DVC: what github.com needs of a PR comment (no
relative links or images, Mermaid charts it can draw, sections under the comment limit) and what each shows.

The checks themselves are helpers.github_markdown's; tests/test_compare.py runs them on the real report."""

from __future__ import annotations

from handsigns import compare
from handsigns.fingerprint import DECIDING_KEYS

from helpers.github_markdown import assert_github_markdown, mermaid_charts

# ------------------------------------------------------------------------------------------------ the checker


def test_the_checker_catches_relative_links_and_images_and_bad_charts():
    for bad in ("[plots](compare_plots/index.html)", "![gallery](../metrics/eval/x.png)", '<img src="x.png">'):
        try:
            assert_github_markdown(f"# r\n\n{bad}\n")
        except AssertionError:
            continue
        raise AssertionError(f"not caught: {bad}")
    assert_github_markdown("[artifact](https://github.com/o/r/actions/runs/1/artifacts/2) [up](#params)\n")
    short = '```mermaid\nxychart-beta\n    title "t"\n    x-axis "epoch" ["1", "2"]\n    y-axis "a" 0 --> 1\n'
    try:
        mermaid_charts(short + "    line [0.5]\n```\n")  # one value for two epochs
    except AssertionError:
        return
    raise AssertionError("a line shorter than its x-axis was not caught")


# ------------------------------------------------------------------------------------------------ sections


def test_an_empty_dvc_table_becomes_a_sentence():
    header = "| Path   | Param   | HEAD   | workspace   |\n|--------|---------|--------|-------------|"
    assert compare.table_or(header, "No parameter changed.") == "No parameter changed."
    assert compare.table_or("", "No parameter changed.") == "No parameter changed."
    row = header + "\n| params.yaml | lr | 0.003 | 0.01 |"
    assert compare.table_or(row, "No parameter changed.") == row


def test_headline_shows_test_and_val_accuracy_base_to_workspace():
    then = {"test": {"accuracy": 0.9833}, "val": {"accuracy": 0.995215}}
    now = {"test": {"accuracy": 1.0}, "val": {"accuracy": 0.995215}}
    line = compare.headline(then, now, "main")
    assert line == "test accuracy 0.9833 → **1.0000** (+0.0167) · val accuracy **0.9952** (no change)"
    assert "`main` has none" in compare.headline(None, now, "main")


FP = {k: f"v-{k}" for k in DECIDING_KEYS} | {"cpu_cores": 2, "platform": "Linux-a", "python": "3.11.7"}
RT = {"train_seconds": 34.175, "train_images_per_s": 474.6, "world_size": 1}


def test_runtime_is_one_line_of_timings_when_the_machine_is_the_same():
    other = FP | {"cpu_cores": 16, "platform": "Linux-b"}  # not deciding keys
    text = compare.runtime_section(FP, other, RT, RT | {"train_seconds": 31.9}, "main")
    assert "|" not in text  # no table
    assert text.startswith(f"Same machine and software as `main`: the {len(DECIDING_KEYS)} fingerprint keys")
    assert text.endswith("Timing: train 31.9 s, 474.6 images/s (`main`: train 34.2 s, 474.6 images/s).")
    assert not any(k in text for k in ("cpu_cores", "platform", "torch_threads"))


def test_runtime_lists_only_the_deciding_keys_that_differ():
    other = FP | {"device_name": "AMD EPYC", "torch_threads": 16, "platform": "Linux-b"}
    text = compare.runtime_section(FP, other, RT, RT, "main")
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| key")]
    assert rows == ["| device_name | v-device_name | AMD EPYC |", "| torch_threads | v-torch_threads | 16 |"]
    assert f"in 2 of the {len(DECIDING_KEYS)} fingerprint keys" in text
    assert "Timing: train 34.2 s" in text


def test_runtime_without_a_base_fingerprint_says_so():
    text = compare.runtime_section(None, FP, None, RT, "main")
    assert text.splitlines()[0] == "`main` has no `metrics/fingerprint.json`: the machines are not compared."
    assert "(`main` has no timings)" in text


def _tsv(name: str, values: list[float], start: int = 1) -> str:
    return f"step\t{name}\n" + "".join(f"{start + i}\t{v}\n" for i, v in enumerate(values))


def test_curves_draw_base_and_workspace_as_two_lines_of_one_chart():
    acc_base, acc_work = [0.669856, 0.77512, 0.995215], [0.7, 0.81, 0.990431]
    texts = {
        "accuracy": (_tsv("accuracy", acc_base), _tsv("accuracy", acc_work)),
        "loss": (_tsv("loss", [1.169361, 0.79, 0.13]), _tsv("loss", [1.0, 0.5, 0.12])),
    }
    text = compare.curves_section(texts, "main")
    assert text.startswith("Orange: `main`; blue: the workspace.")
    charts = mermaid_charts(text)
    assert [c["title"] for c in charts] == ["val accuracy", "val loss"]
    assert charts[0]["lines"] == [[0.6699, 0.7751, 0.9952], [0.7, 0.81, 0.9904]]  # base first, 4 decimals
    assert charts[0]["x"] == ("1", "3") and charts[0]["y"] == ("0.65", "1")
    assert charts[1]["y"] == ("0.1", "1.2")
    assert '"plotColorPalette": "#e16f24, #0969da"' in text  # orange = base, as the text says


def test_curves_of_different_lengths_get_a_chart_each():
    texts = {"accuracy": (_tsv("accuracy", [0.5] * 20), _tsv("accuracy", [0.6] * 5))}
    charts = mermaid_charts(compare.curves_section(texts, "main"))
    assert [(c["title"], len(c["lines"]), len(c["lines"][0])) for c in charts] == [
        ("val accuracy: main", 1, 20),
        ("val accuracy: the workspace", 1, 5),
    ]
    assert charts[0]["y"] == charts[1]["y"] == ("0.5", "0.6")  # one scale, so the two read side by side


def test_long_curves_are_decimated_evenly_and_odd_steps_become_categories():
    values = [round(0.5 + i / 1000, 6) for i in range(250)]
    (chart,) = mermaid_charts(compare.curves_section({"accuracy": (None, _tsv("accuracy", values))}, "main"))
    assert len(chart["lines"][0]) == 84  # every 3rd of 250: at most MAX_POINTS
    assert chart["x"] == ("1", "250")  # (250 - 1) / 83 = 3 epochs apart
    odd = "step\taccuracy\n1\t0.5\n2\t0.6\n5\t0.7\n"
    (chart,) = mermaid_charts(compare.curves_section({"accuracy": (None, odd)}, "main"))
    assert chart["x"] == [1, 2, 5]


def test_curves_never_write_numbers_mermaid_cannot_read():
    texts = {"loss": (_tsv("loss", [1e-05, 2e-06]), _tsv("loss", [float("nan"), 0.5]))}
    text = compare.curves_section(texts, "main")
    assert "val loss: not drawn, the workspace has non-finite values." in text
    assert "```mermaid" not in text
    (chart,) = mermaid_charts(compare.curves_section({"loss": (_tsv("loss", [1e-05, 2e-06]), None)}, "main"))
    assert chart["lines"] == [[0.0, 0.0]]  # 4 decimals, never 1e-05
    assert "val loss: the workspace has no curve." in compare.curves_section(
        {"loss": (_tsv("loss", [1, 2]), None)}, "m"
    )


BASE_PREDS = {f"test/{c}_{i}.jpg": (str(c), str(c)) for c in range(3) for i in range(4)}


def test_confusion_matrix_marks_the_cells_that_changed_with_the_base_count():
    work = dict(BASE_PREDS)
    work["test/0_1.jpg"] = ("0", "2")  # now wrong
    work["test/0_2.jpg"] = ("0", "2")
    table = compare.confusion_table(BASE_PREDS, work, "main")
    rows = [line for line in table.splitlines() if line.startswith("| **")]
    assert rows == [
        "| **0** | **2** (4) | · | **2** (0) |",
        "| **1** | · | 4 | · |",
        "| **2** | · | · | 4 |",
    ]
    assert "`main`'s count in brackets" in table
    same = compare.confusion_table(BASE_PREDS, BASE_PREDS, "main")
    assert "the same as `main`'s" in same and "(" not in same.split("\n", 1)[1]


def test_classes_are_in_numeric_order():
    preds = {f"{c}.jpg": (c, c) for c in ("10", "2", "1", "b", "a")}
    head = compare.confusion_table(None, preds, "main").splitlines()[2]
    assert head == "| actual ╲ predicted | 1 | 2 | 10 | a | b |"


def test_changed_predictions_list_each_image_base_to_workspace_capped():
    work = dict(BASE_PREDS)
    work["test/0_1.jpg"] = ("0", "2")
    base = dict(BASE_PREDS)
    base["test/1_0.jpg"] = ("1", "0")  # base was wrong, workspace right
    text = compare.changed_predictions(base, work, "main")
    assert text.splitlines()[0] == "2 of 12 test images changed their predicted class: 1 now right, 1 no longer right."
    assert "| `test/0_1.jpg` | 0 | 0 ✓ | 2 ✗ |" in text
    assert "| `test/1_0.jpg` | 1 | 0 ✗ | 1 ✓ |" in text
    many = {p: (a, "9") for p, (a, _) in BASE_PREDS.items()}
    capped = compare.changed_predictions(BASE_PREDS, many, "main", cap=5)
    assert capped.count("| `test/") == 5 and capped.endswith("\n\n… and 7 more.")
    assert compare.changed_predictions(BASE_PREDS, BASE_PREDS, "main") == (
        "No test image changed its predicted class (12 compared)."
    )


def test_a_changed_test_split_is_said():
    work = {p: v for p, v in BASE_PREDS.items() if not p.startswith("test/2_")} | {"new.jpg": ("1", "1")}
    text = compare.changed_predictions(BASE_PREDS, work, "main")
    assert text.startswith("The test split differs: 4 images only in `main`, 1 only in the workspace; compared on")


def test_a_long_section_is_cut_at_a_line_and_says_how_much():
    table = "| Path | Param | main | workspace |\n|---|---|---|---|\n" + "".join(
        f"| params.yaml | p{i} | {i} | {i + 1} |\n" for i in range(2000)
    )
    cut = compare._cap(table)
    assert len(cut) <= compare.SECTION_LIMIT
    kept = cut.count("| params.yaml")
    assert cut.endswith(f"\n\n… {2002 - kept - 2} more lines left out to fit a GitHub comment.")
    assert compare._cap("short") == "short"
    # Four capped sections at their limit, four charts of two full lines of 10-character numbers, and the
    # short uncapped sections (headline, plots) still fit one comment.
    charts = 4 * 2 * compare.MAX_POINTS * len("1234.5678, ")
    assert 4 * compare.SECTION_LIMIT + charts + 4_000 < compare.COMMENT_LIMIT
