"""DVC stage `split`: index data/raw/ into train/val/test tables, find duplicates and leaks.

Outputs: data/index/{train,val,test}.csv, classes.json, duplicates.csv, excluded.csv; metrics/data.json (the
headline: classes, images per split, files excluded) and metrics/data/split.json (the full report: per class,
duplicates and leaks by kind, exclusions by reason).
"""

from handsigns.errors import run_main
from handsigns.params import load
from handsigns.params.data import DataParams
from handsigns.paths import DATA_METRICS, INDEX, RAW, SPLIT_REPORT
from handsigns.split import SPLITS, build_index, write_index


def main() -> None:
    result = build_index(RAW, load(DataParams))
    write_index(result, INDEX, DATA_METRICS, SPLIT_REPORT)
    m = result.metrics
    counts = ", ".join(f"{s} {m['images'][s]}" for s in SPLITS)
    print(f"split: {m['classes']} classes ({result.layout}); {counts}")
    print(
        f"split: test images with a copy in train/val: {m['cross_split_duplicates']['test']} "
        f"({m['cross_split_duplicates']['test_exact']} byte-identical); excluded: "
        + ", ".join(f"{k} {v}" for k, v in m["excluded"].items() if v)
    )
    dissolved = m["near_duplicate_groups_dissolved"]
    if dissolved["groups"]:
        print(
            f"split: warning: {dissolved['groups']} group(s) of near-duplicates (the largest {dissolved['largest']} "
            "images) each held more than half of a class: look-alikes, not copies, so not treated as copies; "
            "their pairs are in data/index/duplicates.csv (joined false). If they are copies, remove them; if "
            "distinct images are paired, lower data.near_duplicate_max_difference"
        )


if __name__ == "__main__":
    run_main(main)
