"""Benchmark the prediction API over loopback: per model, single-request latency and concurrent throughput.

    python bench/api_bench.py --url http://127.0.0.1:8000             # a server that is already running
    python bench/api_bench.py --spawn [--workers N]                    # start `digitlab serve`, time start-up

For every ready model: `--n` sequential predictions on one keep-alive connection (median and p99 latency,
measured by the client around the whole HTTP exchange), then `--concurrency` clients, each on its own
connection, sending predictions back to back for `--seconds` (throughput = 200 answers / second),
`--rounds` times: the table shows the median run and the range (a shared machine's speed drifts).
The image is a realistic drawing: a '7' drawn with PIL lines on a 280x280 canvas, sent as multipart PNG,
like the Streamlit UI does. Every prediction is logged by the server, as in production.

The client is a minimal asyncio HTTP/1.1 client with pre-built requests, so that the numbers measure
the server and not the client's own overhead (the client shares the machine's cores with the server).
Exit status 1 when any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

BOUNDARY = "digitlab-bench-boundary"


def build_request(host: str, png: bytes, model: str | None) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="drawing.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + png
        + b"\r\n",
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="source"\r\n\r\napi\r\n'.encode(),
    ]
    if model:
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n'.encode()
        )
    body = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
    head = (
        f"POST /api/v1/predict HTTP/1.1\r\nHost: {host}\r\nUser-Agent: digitlab-bench\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    """One keep-alive HTTP/1.1 connection; `request()` returns (status, body)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
            elif name == "transfer-encoding":
                raise RuntimeError("chunked responses are not expected from the predict route")
        body = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


async def single(host: str, port: int, raw: bytes, n: int, warmup: int) -> tuple[list[float], int]:
    conn = Connection(host, port)
    failures = 0
    latencies = []
    try:
        for i in range(warmup + n):
            started = time.perf_counter()
            status, body = await conn.request(raw)
            elapsed = time.perf_counter() - started
            if status != 200:
                failures += 1
                if failures == 1:
                    print(f"  request failed: HTTP {status} {body[:200]!r}", file=sys.stderr)
            if i >= warmup:
                latencies.append(elapsed * 1000.0)
    finally:
        await conn.close()
    return latencies, failures


async def concurrent(
    host: str, port: int, raw: bytes, clients: int, seconds: float
) -> tuple[int, int, float, list]:
    conns = [Connection(host, port) for _ in range(clients)]
    await asyncio.gather(*(c.open() for c in conns))
    done = failures = 0
    latencies: list[float] = []
    stop_at = 0.0

    async def client(conn: Connection) -> None:
        nonlocal done, failures
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            status, _ = await conn.request(raw)
            latencies.append((time.perf_counter() - t0) * 1000.0)
            if status == 200:
                done += 1
            else:
                failures += 1

    for c in conns:  # one request each first: every connection is warm before the clock starts
        await c.request(raw)
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(client(c) for c in conns))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(c.close() for c in conns))
    return done, failures, elapsed, latencies


def process_cpu_seconds(pid: int | None) -> float | None:
    """CPU time (user + system) of the server process and its worker children, from /proc (Linux)."""
    if pid is None:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    pids = {pid}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task in tasks:  # worker processes are children of some thread of the server
        try:
            pids.update(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue  # a thread that just ended
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            if p == pid:
                return None
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def wait_ready(url: str, timeout: float, proc: subprocess.Popen | None = None) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode} before it was ready")
        try:
            health = get_json(url + "/health", timeout=1.0)
            if any(state == "ready" for state in health.get("models", {}).values()):
                return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{url} was not ready within {timeout:.0f} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(workers: int) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "digitlab",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=sys.stderr)
    wait_ready(url, 60.0, proc)
    return proc, url, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=os.environ.get("DIGITLAB_API_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--n", type=int, default=200, help="sequential predictions per model (latency)")
    parser.add_argument("--warmup", type=int, default=20, help="sequential predictions before measuring")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients (throughput)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each throughput run")
    parser.add_argument(
        "--rounds", type=int, default=3, help="throughput runs per model; the table shows their median"
    )
    parser.add_argument("--models", default=None, help="comma-separated models (default: every ready one)")
    parser.add_argument(
        "--throughput-models",
        default="all",
        help="'all', 'default', or comma-separated models to run the concurrent test for",
    )
    parser.add_argument(
        "--spawn", action="store_true", help="start `digitlab serve` (env settings) and time it"
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="with --spawn: uvicorn worker processes (0: the default, one per core)"
    )
    parser.add_argument(
        "--pid", type=int, default=None, help="without --spawn: the running server's pid, for its CPU per request"
    )
    parser.add_argument("--json", dest="json_out", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)

    proc = None
    startup = None
    if args.spawn:
        proc, args.url, startup = spawn(args.workers)
    try:
        return run(args, startup, proc.pid if proc is not None else args.pid)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def run(args, startup: float | None, pid: int | None = None) -> int:
    url = args.url.rstrip("/")
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if startup is None:
        wait_ready(url, 10.0)
    health = get_json(url + "/health")
    models = get_json(url + "/api/v1/models")
    default = next((m["name"] for m in models if m.get("default")), None)
    ready = [m["name"] for m in models if m["status"] == "ready"]
    names = args.models.split(",") if args.models else ready
    if args.throughput_models == "all":
        tp_names = set(names)
    elif args.throughput_models == "default":
        tp_names = {default}
    else:
        tp_names = set(args.throughput_models.split(","))
    from digitlab.api.upkeep import sample_drawing

    png = sample_drawing()  # a drawn 7, dark pen on white, like a canvas export
    print(
        f"server {url}: database {health['database']}, default model {default}, "
        f"{os.cpu_count()} cores, image {len(png)} bytes PNG 280x280, "
        f"load average before: {os.getloadavg()[0]:.1f}"
    )
    if startup is not None:
        print(f"start-up to ready (process start -> /health with a ready model): {startup:.2f} s")
    rows = []
    failed = 0
    for name in names:
        raw = build_request(f"{host}:{port}", png, name)
        lat, f1 = asyncio.run(single(host, port, raw, args.n, args.warmup))
        row = {
            "model": name + (" (default)" if name == default else ""),
            "median_ms": statistics.median(lat),
            "p99_ms": pct(lat, 99),
            "single_rps": 1000.0 / statistics.mean(lat),
        }
        failed += f1
        if name in tp_names:
            cpu0 = process_cpu_seconds(pid)
            rates, clat, answered = [], [], 0
            for _ in range(max(1, args.rounds)):  # a shared machine's speed drifts: take the median run
                done, f2, elapsed, lat_round = asyncio.run(
                    concurrent(host, port, raw, args.concurrency, args.seconds)
                )
                failed += f2
                rates.append(done / elapsed)
                clat += lat_round
                # the warm-up request of each connection is included in the CPU time, not in `done`
                answered += done + f2 + args.concurrency
            cpu1 = process_cpu_seconds(pid)
            row.update(
                throughput=statistics.median(rates),
                throughput_range=(min(rates), max(rates)),
                conc_median_ms=statistics.median(clat),
                conc_p99_ms=pct(clat, 99),
            )
            if cpu0 is not None and cpu1 is not None and answered:
                row["server_cpu_ms"] = 1000.0 * (cpu1 - cpu0) / answered
        rows.append(row)
        print(f"  {name}: done", file=sys.stderr)

    header = (
        f"{'model':<22} {'median ms':>10} {'p99 ms':>8} {'1-client/s':>11} "
        f"{'tput/s @' + str(args.concurrency):>12} {'runs min-max':>13} {'median ms':>10} {'p99 ms':>8} "
        f"{'server CPU ms/req':>18}"
    )
    print()
    print(
        f"{'':<22} {'-- single predictions, n=' + str(args.n) + ' --':^31} "
        f"{'-- ' + str(args.concurrency) + ' concurrent clients, ' + str(args.rounds) + ' runs --':^46}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        tp = (
            f"{r['throughput']:>12.0f} {'{:.0f}-{:.0f}'.format(*r['throughput_range']):>13} "
            f"{r['conc_median_ms']:>10.1f} {r['conc_p99_ms']:>8.1f}"
            if "throughput" in r
            else ""
        )
        if "server_cpu_ms" in r:
            tp += f" {r['server_cpu_ms']:>18.2f}"
        print(f"{r['model']:<22} {r['median_ms']:>10.2f} {r['p99_ms']:>8.2f} {r['single_rps']:>11.0f} {tp}")
    print(
        f"load average after: {os.getloadavg()[0]:.1f} (other work on the machine competes for the same cores)"
    )
    if failed:
        print(f"\n{failed} request(s) failed", file=sys.stderr)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"url": url, "startup_s": startup, "rows": rows}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
