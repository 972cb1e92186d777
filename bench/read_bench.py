"""Latency of reading a written number: `/read` of a 6-digit drawing with the CNN (target: median <= 50 ms).

    python bench/read_bench.py                 # in-process and through a spawned `digitlab serve`
    python bench/read_bench.py --no-server     # in-process only

The drawing: "204719" written with a round pen on an 840 x 280 canvas (the Number page's size), two of
its digits in two strokes (4, crossed 7), sent as PNG. In-process: `digitlab.segment.read_number` with
the bundled CNN, detector, segment verifier and line reader, one BLAS thread (as the API runs it): wall and CPU time per
reading.
Server: `--n` sequential multipart requests on one keep-alive connection to a spawned API (port 18400
unless `--port`), the client's round-trip and the server's own `latency_ms`. Prints one table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's pen: drawn_numbers.draw_number

TEXT = "204719"


def drawing() -> bytes:
    from drawn_numbers import draw_number

    return draw_number(TEXT, size=120, gap=0.25)


def in_process(png: bytes, n: int) -> dict:
    from threadpoolctl import threadpool_limits

    from digitlab.detector.runtime import load_detector
    from digitlab.line_reader import load_line_reader
    from digitlab.models.registry import BUNDLED_DIR, load_model
    from digitlab.segment import read_number
    from digitlab.segment_verifier import load_segment_verifier

    threadpool_limits(limits=1)
    model, detector = load_model("cnn", BUNDLED_DIR), load_detector(None)
    verifier, line_reader = load_segment_verifier(None), load_line_reader(None)
    for _ in range(3):
        text = read_number(png, model, detector, verifier=verifier, line_reader=line_reader).text
    wall, cpu = [], []
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        read_number(png, model, detector, verifier=verifier, line_reader=line_reader)
        wall.append(1000 * (time.perf_counter() - t0))
        cpu.append(1000 * (time.process_time() - c0))
    return {"text": text, "wall": wall, "cpu": cpu}


def through_server(png: bytes, n: int, port: int) -> dict:
    import httpx

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGITLAB_", "DATABASE_URL"))}
    with tempfile.TemporaryDirectory() as tmp:
        env.update(DIGITLAB_MODEL_DIR=tmp, DIGITLAB_DATA_DIR=tmp, DATABASE_URL=f"sqlite:///{tmp}/bench.db")
        cmd = [sys.executable, "-m", "digitlab", "serve", "--host", "127.0.0.1", "--port", str(port)]
        proc = subprocess.Popen(
            [*cmd, "--workers", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            rtt, server = [], []
            with httpx.Client(base_url=url, timeout=30) as client:
                for i in range(n + 3):
                    t0 = time.perf_counter()
                    r = client.post(
                        "/api/v1/read", files={"image": ("n.png", png, "image/png")}, data={"model": "cnn"}
                    )
                    r.raise_for_status()
                    if i >= 3:  # warm-up
                        rtt.append(1000 * (time.perf_counter() - t0))
                        server.append(r.json()["latency_ms"])
            return {"text": r.json()["text"], "rtt": rtt, "server": server}
        finally:
            proc.terminate()
            proc.wait(15)


def row(name: str, values: list[float]) -> str:
    q = statistics.quantiles(values, n=10)
    return f"{name:<38}{statistics.median(values):>10.1f}{q[0]:>10.1f}{q[-1]:>10.1f}{len(values):>6}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--port", type=int, default=18400)
    parser.add_argument("--no-server", action="store_true")
    args = parser.parse_args()
    png = drawing()
    local = in_process(png, args.n)
    print(
        f"/read of a 6-digit drawing ({TEXT!r}, 840x280 PNG, {len(png):,} bytes), CNN; load {os.getloadavg()[0]:.1f}"
    )
    print(f"{'ms':<38}{'median':>10}{'p10':>10}{'p90':>10}{'n':>6}")
    print(row(f"in-process wall (read {local['text']!r})", local["wall"]))
    print(row("in-process CPU", local["cpu"]))
    if not args.no_server:
        remote = through_server(png, args.n, args.port)
        print(row(f"server latency_ms (read {remote['text']!r})", remote["server"]))
        print(row("client round trip (HTTP, store write)", remote["rtt"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
