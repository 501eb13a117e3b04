"""DVC stage `split`: index data/raw/ into train/val/test tables, find duplicates and leaks.

Outputs: data/index/{train,val,test}.csv, classes.json, duplicates.csv, excluded.csv; metrics/data.json (the
headline: classes, images per split, files excluded) and metrics/data/split.json (the full report: per class,
duplicates and leaks by kind, exclusions by reason).
"""

from pathlib import Path

from handsigns.errors import run_main
from handsigns.index import SPLITS, build_index, write_index
from handsigns.params import load_section
from handsigns.params.data import DataParams

RAW_DIR = Path("data/raw")
INDEX_DIR = Path("data/index")
METRICS = Path("metrics/data.json")
DETAILS = Path("metrics/data/split.json")


def main() -> None:
    result = build_index(RAW_DIR, load_section("data", DataParams))
    write_index(result, INDEX_DIR, METRICS, DETAILS)
    m = result.metrics
    counts = ", ".join(f"{s} {m['images'][s]}" for s in SPLITS)
    print(f"split: {m['classes']} classes ({result.layout}); {counts}")
    print(f"split: test images with a copy in train/val: {m['cross_split_duplicates']['test']} "
          f"({m['cross_split_duplicates']['test_exact']} byte-identical); excluded: "
          + ", ".join(f"{k} {v}" for k, v in m["excluded"].items() if v))


if __name__ == "__main__":
    run_main(main)
