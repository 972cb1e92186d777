"""Container health probe (standard library only: slim images have no curl).

    python healthcheck.py api   ->  GET http://127.0.0.1:$DIGITLAB_PORT/health           (default 8000)
    python healthcheck.py ui    ->  GET http://127.0.0.1:$DIGITLAB_UI_PORT/_stcore/health (default 8501)

Exit 0 when the server answers 200, else 1 with one line on stderr. The API's /health is 200 whenever
the process serves (its body says "degraded" during a database outage, when it spools predictions:
restarting the container would not help then, so that still counts as healthy).
"""

from __future__ import annotations

import os
import sys
import urllib.request


def url_for(role: str) -> str:
    if role == "api":
        return f"http://127.0.0.1:{os.environ.get('DIGITLAB_PORT', '8000')}/health"
    if role == "ui":
        return f"http://127.0.0.1:{os.environ.get('DIGITLAB_UI_PORT', '8501')}/_stcore/health"
    raise SystemExit(f"usage: healthcheck.py api|ui (not {role!r})")


def main(argv: list[str]) -> int:
    url = url_for(argv[1] if len(argv) > 1 else "api")
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy", said in one line
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
