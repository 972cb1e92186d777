"""`digitlab ui`: run `streamlit run <this package>/app.py` with the right options, return its exit code.

The theme and server options live in `ui/.streamlit/config.toml` next to `app.py` (Streamlit reads a
script-level config); host and port come from the command line, else `DIGITLAB_UI_HOST/PORT`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).with_name("app.py")


def streamlit_command(host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "digitlab.ui.warm_start", "run", str(APP),  # `streamlit run`, imports done ahead
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--browser.serverAddress", "localhost" if host in ("0.0.0.0", "::") else host,
    ]  # fmt: skip


def run_ui(host: str | None = None, port: int | None = None) -> int:
    """Start the Streamlit server in the foreground; SIGINT/SIGTERM are passed on to it."""
    from digitlab.core.config import get_settings

    settings = get_settings()
    host = host or settings.ui_host
    port = int(settings.ui_port if port is None else port)
    if not 0 <= port <= 65535:
        from digitlab.errors import DigitlabError

        raise DigitlabError(f"port must be 0-65535, got {port}", code="invalid_port")
    from digitlab.ports import refuse_busy_port

    refuse_busy_port(host, port, "UI", "DIGITLAB_UI_PORT")
    env = dict(os.environ)
    env.setdefault("DIGITLAB_API_URL", settings.api_url)
    print(
        f"digitlab UI on {f'http://{host}:{port}' if port else f'a free port of {host} (Streamlit names it below)'}"
        f"  (API: {env['DIGITLAB_API_URL']})", file=sys.stderr, flush=True,
    )
    proc = subprocess.Popen(streamlit_command(host, port), env=env)

    def forward(signum, _frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                code = proc.wait()
                return 128 - code if code < 0 else code  # killed by signal N: 128 + N (-2 was exit code 254)
            except KeyboardInterrupt:  # forwarded above; wait for Streamlit to shut down
                continue
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
