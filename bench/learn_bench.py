"""Learning from users, end to end on the real stack, with handwriting that is not MNIST (issue 14).

1. start `digitlab serve` on a scratch SQLite database and a copy of a model folder;
2. "users" post labelled drawings through the public API (`POST /api/v1/predict` with `true_digit` and
   `session_id`): the USPS and Semeion 'calibration' digits (scans by many writers that no model is
   trained on), shown as the app receives them (canvas-like images, several colour schemes), in sessions
   of consecutive digits;
3. measure every served model on drawings of *other* writers (USPS test, Semeion's held-out part),
   never learned from;
4. run `digitlab learn` (same DATABASE_URL / DIGITLAB_MODEL_DIR as the API), timed;
5. wait until the running API serves the promoted versions (no restart), measure again.

    python bench/learn_bench.py --models models --users 3000
Prints a table: per model, accuracy on other writers before and after, status, and the timings.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from digitlab.evaluation.real import load_part, view_image


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(image) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _views(images: np.ndarray, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    views = ("black-on-white", "white-on-black", "colour-on-transparent")
    return [_png(view_image(img, views[i % len(views)], rng)) for i, img in enumerate(images)]


def _accuracy_by_model(api: str, pngs: list[bytes], labels: np.ndarray) -> dict[str, float]:
    """Every ready model on these drawings, through the running API (`model=all`: stored, as every prediction is,
    but with no true digit, so no later run learns from them)."""
    right: dict[str, int] = {}
    with httpx.Client(base_url=api, timeout=60) as client:
        def one(item):
            png, digit = item
            r = client.post("/api/v1/predict", files={"image": ("d.png", png, "image/png")}, data={"model": "all"})
            return [(p["model"], p["digit"] == digit) for p in r.json()["predictions"]] if r.status_code == 200 else []

        with ThreadPoolExecutor(4) as pool:
            for answers in pool.map(one, zip(pngs, labels, strict=True)):
                for model, ok in answers:
                    right[model] = right.get(model, 0) + int(ok)
    return {m: n / len(labels) for m, n in right.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=Path(os.environ.get("DIGITLAB_MODEL_DIR", "models")))
    parser.add_argument("--handwriting", type=Path, default=Path(os.environ.get("DIGITLAB_HANDWRITING_DIR", "../shared/handwriting")))
    parser.add_argument("--users", type=int, default=2199, help="labelled drawings posted by the users (at most 2,199)")
    parser.add_argument("--session-size", type=int, default=50)
    parser.add_argument("--views", type=int, default=1,
                        help="each user digit drawn this many times, each time in another colour scheme and size "
                             "(distinct images, same session): 5 x 2,199 = 10,995 drawings times `digitlab learn` at 10k")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="digitlab-learn-bench-"))
    shutil.copytree(args.models, work / "models")
    port = _free_port()
    env = {**os.environ, "DIGITLAB_MODEL_DIR": str(work / "models"), "DIGITLAB_DATA_DIR": str(work / "data"),
           "DATABASE_URL": f"sqlite:///{work / 'bench.db'}", "DIGITLAB_PORT": str(port), "DIGITLAB_WORKERS": "1"}  # fmt: skip
    env.pop("DIGITLAB_ADMIN_TOKEN", None)
    api = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "digitlab", "serve"], env=env,
                              stdout=open(work / "serve.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    try:
        for _ in range(240):
            try:
                if httpx.get(api + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        # the users: real handwriting no model was trained on (`digitlab train` and `train cnn` learn the
        # 'fit' parts; the 'calibration' parts only choose the detector's thresholds)
        parts = [load_part(name, "calibration", args.handwriting) for name in ("usps", "semeion")]
        users_x = np.concatenate([p[0] for p in parts])[: args.users]
        users_y = np.concatenate([p[1] for p in parts])[: args.users]
        sessions = np.arange(len(users_y)) // args.session_size
        if args.views > 1:  # the same digits again, drawn another way: kept next to their first drawing
            users_x, users_y, sessions = (np.repeat(a, args.views, axis=0) for a in (users_x, users_y, sessions))
        others = [load_part("usps", "heldout", args.handwriting), load_part("semeion", "heldout", args.handwriting)]
        other_pngs = _views(np.concatenate([o[0] for o in others]), seed=1)
        other_y = np.concatenate([o[1] for o in others])
        print(f"users: {len(users_y)} USPS + Semeion calibration digits in sessions of {args.session_size}; "
              f"others: {len(other_y)} (USPS test + Semeion held-out)", flush=True)
        before = _accuracy_by_model(api, other_pngs, other_y)
        started = time.perf_counter()
        with httpx.Client(base_url=api, timeout=60) as client:
            def post(i_png):
                i, png = i_png
                r = client.post("/api/v1/predict", files={"image": ("d.png", png, "image/png")},
                                data={"true_digit": str(int(users_y[i])), "session_id": f"user{sessions[i]}",
                                      "source": "ui"})  # fmt: skip
                return r.status_code

            with ThreadPoolExecutor(4) as pool:
                codes = list(pool.map(post, enumerate(_views(users_x, seed=0))))
        print(f"posted {codes.count(200)} labelled drawings in {time.perf_counter() - started:.0f} s", flush=True)
        started = time.perf_counter()
        learn = subprocess.run([sys.executable, "-m", "digitlab", "learn"], env=env, capture_output=True, text=True,
                               check=False)
        learn_seconds = time.perf_counter() - started
        print(learn.stdout, learn.stderr[-3000:] if learn.returncode else "", flush=True)
        promoted = [line.split(":")[0] for line in learn.stdout.splitlines() if " promoted" in line]
        started = time.perf_counter()
        while time.perf_counter() - started < 60:
            served = {m["name"]: m["version"] for m in httpx.get(api + "/api/v1/models", timeout=10).json()}
            if all(served.get(name, "").isdigit() for name in promoted):
                break
            time.sleep(1)
        pickup = time.perf_counter() - started
        after = _accuracy_by_model(api, other_pngs, other_y)
        print("\n| model | other writers before | after | status |\n| --- | --- | --- | --- |")
        status = {line.split(":")[0]: line.split(":")[1].strip().split(" (")[0] for line in learn.stdout.splitlines() if ":" in line}
        for model in sorted(before):
            print(f"| {model} | {before[model]:.2%} | {after.get(model, float('nan')):.2%} | {status.get(model, '')} |")
        print(f"\ndigitlab learn: {learn_seconds / 60:.1f} min for {len(users_y)} drawings (exit {learn.returncode}); "
              f"served by the running API {pickup:.1f} s after it ended; load {os.getloadavg()[0]:.1f}")
    finally:
        server.terminate()
        server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
