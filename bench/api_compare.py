"""Two versions of the API side by side: server CPU per prediction, throughput and latency, and ratios.

    git worktree add ../before <commit>          # the code to compare against
    python bench/api_compare.py --before ../before --after . [--rounds 3] [--models cnn]

Each round spawns `digitlab serve` from one tree, runs `bench/api_bench.py` against it (the default
workers, 32 clients), stops it, then does the same with the other tree; the trees alternate so that a
drift in the machine's speed hits both alike. The table shows the median over rounds and after/before.
Both servers use the same environment (DIGITLAB_MODEL_DIR, a fresh DIGITLAB_DATA_DIR each run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent / "api_bench.py"
FIELDS = ("median_ms", "throughput", "server_cpu_ms")


def run_once(tree: Path, models: str | None, seconds: float, workers: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as data, tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = dict(os.environ, PYTHONPATH=str(tree / "src"), DIGITLAB_DATA_DIR=data)
        cmd = [sys.executable, str(BENCH), "--spawn", "--rounds", "1", "--seconds", str(seconds), "--json", out.name]
        if models:
            cmd += ["--models", models]
        if workers:
            cmd += ["--workers", str(workers)]
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        return json.loads(Path(out.name).read_text())["rows"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="repository folder of the old code")
    parser.add_argument("--after", type=Path, default=Path("."), help="repository folder of the new code")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--models", default=None, help="comma-separated (default: every ready model)")
    parser.add_argument("--workers", type=int, default=0, help="0: the default (one per core)")
    args = parser.parse_args(argv)

    results: dict[str, dict[str, dict[str, list[float]]]] = {"before": {}, "after": {}}
    for r in range(args.rounds):
        for label in ("before", "after") if r % 2 == 0 else ("after", "before"):
            tree = (args.before if label == "before" else args.after).resolve()
            for row in run_once(tree, args.models, args.seconds, args.workers):
                name = row["model"].replace(" (default)", "")
                slot = results[label].setdefault(name, {f: [] for f in FIELDS})
                for f in FIELDS:
                    if f in row:
                        slot[f].append(row[f])
            print(f"round {r + 1}: {label} done (load average {os.getloadavg()[0]:.1f})", file=sys.stderr)

    print(f"\n{args.rounds} alternating rounds, medians (before -> after, ratio)")
    header = f"{'model':<15} {'server CPU ms/prediction':>32} {'throughput/s @ 32':>28} {'median latency ms':>28}"
    print(header)
    print("-" * len(header))
    for name in results["after"]:
        b, a = results["before"].get(name), results["after"][name]
        if b is None:
            continue
        cells = []
        for f, better_low in (("server_cpu_ms", True), ("throughput", False), ("median_ms", True)):
            if not b[f] or not a[f]:
                cells.append(f"{'-':>28}")
                continue
            mb, ma = statistics.median(b[f]), statistics.median(a[f])
            ratio = mb / ma if better_low else ma / mb
            cells.append(f"{mb:>9.2f} -> {ma:>7.2f} ({ratio:4.2f}x)")
        print(f"{name:<15} {cells[0]:>32} {cells[1]:>28} {cells[2]:>28}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
