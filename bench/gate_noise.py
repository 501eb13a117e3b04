"""The gate's noise floor: how far apart two equally good runs of the default recipe land, and what the gate's
rule says of each pair (docs/comparing-runs.md, "The regression gate").

    python bench/gate_noise.py                        # seeds 0-4 on this machine, against each other and HEAD
    python bench/gate_noise.py --seeds 0 -S epochs=5 -S train.min_steps=0     # a real regression instead

Each seed trains and evaluates in its own temporary folder (bench/seeds.py's run_seed), so the workspace is untouched;
needs `dvc repro split`. Every run is paired with every other and with HEAD's committed run (made on the
machine its metrics/fingerprint.json names): held-out images lost and gained, the sign test's p, and whether
`handsigns gate` would fail it with the committed ci params. Prints markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT
from seeds import run_seed

from handsigns import gate


def row(name: str, paired: gate.Paired, rule: gate.Rule) -> str:
    fails = rule.regression(paired, "ref")
    return (
        f"| {name} | {paired.ref_right}/{paired.images} | {paired.run_right}/{paired.images} | {paired.lost} | "
        f"{paired.gained} | {paired.change:+.4f} | {paired.p_worse():.3g} | {'FAIL' if fails else 'pass'} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    if not (ROOT / "data/index/train.csv").exists():
        raise SystemExit("error: data/index not found; run `dvc repro split` first")
    rule = gate.rule_at("HEAD")  # the gate's own thresholds
    runs: dict[str, dict[str, tuple[str, str]]] = {}
    with tempfile.TemporaryDirectory(prefix="handsigns-gate-noise-") as tmp:
        for seed in args.seeds:
            workdir = Path(tmp) / f"seed{seed}"
            run_seed(seed, args.overrides, workdir)  # train + evaluate in workdir
            with contextlib.chdir(workdir):
                runs[f"seed {seed}"] = gate.held_out_predictions(None)
            print(f"seed {seed}: done", file=sys.stderr, flush=True)
    committed = gate.fingerprint_at("HEAD") or {}
    head = f"HEAD's run ({committed.get('device_name')}, {committed.get('precision')})"
    print(f"overrides: {' '.join(args.overrides) or '(none: params.yaml as committed)'}; ci: {rule}\n")
    print("| run against reference | reference right | run right | lost | gained | change | p | gate |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    reference = gate.held_out_predictions("HEAD")
    for name, found in runs.items():
        print(row(f"{name} against {head}", gate.pair(reference, found), rule))
    for (a, pa), (b, pb) in itertools.permutations(runs.items(), 2):
        print(row(f"{b} against {a}", gate.pair(pa, pb), rule))


if __name__ == "__main__":
    main()
