"""Soak the prediction API: many clients for a minute; errors, stored-exactly-once, memory.

    python bench/soak_bench.py --spawn [--clients 64] [--seconds 60]     # start `digitlab serve`
    python bench/soak_bench.py --url http://127.0.0.1:8000 --pid PID      # a running server

Every client sends realistic canvas drawings (a few different ones, PNG, multipart) back to back on
its own keep-alive connection. The table shows, every 5 s, the answers per second and the resident
memory (RSS) of each server process. At the end: failed requests (any non-200 or broken connection),
then every answered prediction is looked up in the store (the server's DATABASE_URL / DIGITLAB_DATA_DIR
settings, read from the same environment): each answer's uid must be stored exactly once. Memory is
"flat" when no process grew more than 10 % between the end of the warm-up (the first 20 % of the run)
and the end. Exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_bench import Connection, build_request, spawn, wait_ready


def drawings(count: int = 8) -> list[bytes]:
    """`count` different canvas drawings (a 7 at different sizes and places), PNG like the UI sends."""
    from PIL import Image, ImageDraw

    out = []
    for i in range(count):
        im = Image.new("RGB", (280, 280), "white")
        k, dx, dy = 0.7 + 0.04 * i, 6 * i - 20, 20 - 5 * i
        points = [(80 * k + dx, 62 * k + dy), (196 * k + dx, 58 * k + dy), (150 * k + dx, 140 * k + dy), (118 * k + dx, 226 * k + dy)]
        ImageDraw.Draw(im).line(points, fill="#1f2340", width=14 + i, joint="curve")
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def server_processes(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


async def soak(host: str, port: int, raws: list[bytes], clients: int, seconds: float, pid: int | None):
    conns = [Connection(host, port) for _ in range(clients)]
    await asyncio.gather(*(c.open() for c in conns))
    uids: list[str] = []
    failures: list[str] = []
    done_at: list[float] = []
    started = time.perf_counter()
    stop_at = started + seconds

    async def client(i: int, conn: Connection) -> None:
        n = i
        while time.perf_counter() < stop_at:
            n += 1
            try:
                status, body = await conn.request(raws[n % len(raws)])
            except (OSError, asyncio.IncompleteReadError) as exc:
                failures.append(f"connection: {exc!r}")
                await conn.close()
                continue
            if status != 200:
                failures.append(f"HTTP {status}: {body[:120]!r}")
                continue
            answer = json.loads(body)
            if not answer.get("logged"):
                failures.append(f"not logged: {answer.get('uid')}")
            uids.append(answer["uid"])
            done_at.append(time.perf_counter())

    async def sample_memory() -> list[tuple[float, dict[int, int]]]:
        samples = []
        while time.perf_counter() < stop_at:
            if pid is not None:
                rss = {}
                for p in server_processes(pid):
                    try:
                        rss[p.pid] = p.memory_info().rss
                    except psutil.Error:
                        continue
                samples.append((time.perf_counter() - started, rss))
            await asyncio.sleep(min(5.0, max(0.1, stop_at - time.perf_counter())))
        return samples

    memory_task = asyncio.create_task(sample_memory())
    await asyncio.gather(*(client(i, c) for i, c in enumerate(conns)))
    samples = await memory_task
    await asyncio.gather(*(c.close() for c in conns))
    return uids, failures, done_at, started, samples


def stored_counts(uids: list[str]) -> dict[str, int]:
    """How many rows hold each uid, in the store the server writes to (same environment settings)."""
    from sqlalchemy import func, select

    from digitlab.core.config import Settings
    from digitlab.store import from_settings
    from digitlab.store.models import TABLE

    store = from_settings(Settings())
    counts: dict[str, int] = {}
    with store.repo.engine.connect() as conn:
        for lo in range(0, len(uids), 500):
            chunk = uids[lo : lo + 500]
            stmt = select(TABLE.c.uid, func.count()).where(TABLE.c.uid.in_(chunk)).group_by(TABLE.c.uid)
            counts.update({uid: n for uid, n in conn.execute(stmt)})
    store.repo.engine.dispose()
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("DIGITLAB_API_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--pid", type=int, default=None, help="without --spawn: the server's pid (memory)")
    parser.add_argument("--spawn", action="store_true", help="start `digitlab serve` (env settings)")
    parser.add_argument("--workers", type=int, default=0, help="with --spawn: worker processes (0: default)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--model", default=None, help="model to ask (default: the server's default)")
    args = parser.parse_args(argv)

    proc = None
    if args.spawn:
        proc, args.url, _ = spawn(args.workers)
        args.pid = proc.pid
    try:
        return run(args)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(15)


def run(args) -> int:
    from urllib.parse import urlsplit

    url = args.url.rstrip("/")
    wait_ready(url, 30.0)
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    raws = [build_request(f"{host}:{port}", png, args.model) for png in drawings()]
    print(f"soak: {args.clients} clients for {args.seconds:.0f} s against {url}, load average {os.getloadavg()[0]:.1f}")
    uids, failures, done_at, started, samples = asyncio.run(
        soak(host, port, raws, args.clients, args.seconds, args.pid)
    )

    print(f"\n{'t (s)':>6} {'answers/s':>10}  RSS MB per server process")
    previous = 0.0
    for t, rss in samples[1:] + [(args.seconds, {})]:
        count = sum(1 for d in done_at if previous <= d - started < t)
        mb = " ".join(f"{v / 2**20:7.1f}" for _, v in sorted(rss.items()))
        print(f"{t:6.1f} {count / max(t - previous, 1e-9):10.0f}  {mb}")
        previous = t

    ok = True
    print(f"\nanswered: {len(uids)} in {args.seconds:.0f} s ({len(uids) / args.seconds:.0f}/s); failed: {len(failures)}")
    if failures:
        ok = False
        for line in sorted(set(failures))[:5]:
            print(f"  {line}")
    counts = stored_counts(uids)
    once = sum(1 for u in uids if counts.get(u) == 1)
    missing = sum(1 for u in uids if u not in counts)
    repeated = sum(1 for u in uids if counts.get(u, 0) > 1)
    duplicate_answers = len(uids) - len(set(uids))
    print(f"stored exactly once: {once} of {len(uids)} (missing {missing}, stored twice or more {repeated}, "
          f"uid answered twice {duplicate_answers})")
    ok &= once == len(uids) and duplicate_answers == 0

    if args.pid is not None and len(samples) >= 3:
        warm = samples[max(1, len(samples) // 5)][1]
        last = samples[-1][1]
        growth = {p: (last[p] - warm[p]) / warm[p] for p in warm if p in last}
        worst = max(growth.values()) if growth else 0.0
        flat = worst <= 0.10
        print(f"memory after warm-up -> end: largest growth {100 * worst:+.1f} % ({'flat' if flat else 'GROWING'})")
        ok &= flat
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
