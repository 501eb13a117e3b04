"""DVC stage `download`: fetch data.source, verify data.sha256, extract safely into data/raw/.

Outputs: data/raw/ (the extracted data set) and data/provenance.json (source, sha256, files, bytes).
"""

from handsigns.download import materialise
from handsigns.errors import run_main
from handsigns.extract import Limits
from handsigns.files import write_json
from handsigns.params import load
from handsigns.params.data import DataParams
from handsigns.paths import PROVENANCE, RAW


def main() -> None:
    p = load(DataParams)
    record = materialise(
        p.source, p.sha256, RAW, retries=p.download_retries, timeout_s=p.download_timeout_s, limits=Limits.of(p)
    )
    write_json(PROVENANCE, record)
    print(f"download: {record['files']} files, {record['bytes']:,} bytes from {p.source} into {RAW}/")
    if p.sha256 is None:
        print(
            f"download: data.sha256 is null; observed sha256 {record['sha256']} — pin it in params.yaml "
            "so future downloads are verified"
        )


if __name__ == "__main__":
    run_main(main)
