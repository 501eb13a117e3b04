"""DVC stage `download`: fetch data.source, verify data.sha256, extract safely into data/raw/.

Outputs: data/raw/ (the extracted data set) and data/provenance.json (source, sha256, files, bytes).
"""

from pathlib import Path

from handsigns.atomic import write_json
from handsigns.errors import run_main
from handsigns.params import load_section
from handsigns.params.data import DataParams
from handsigns.sources import materialise

RAW_DIR = Path("data/raw")
PROVENANCE = Path("data/provenance.json")


def main() -> None:
    p = load_section("data", DataParams)
    record = materialise(p.source, p.sha256, RAW_DIR, retries=p.download_retries,
                         timeout_s=p.download_timeout_s)
    write_json(PROVENANCE, record)
    print(f"download: {record['files']} files, {record['bytes']:,} bytes from {p.source} into {RAW_DIR}/")
    if p.sha256 is None:
        print(f"download: data.sha256 is null; observed sha256 {record['sha256']} — pin it in params.yaml "
              "so future downloads are verified")


if __name__ == "__main__":
    run_main(main)
