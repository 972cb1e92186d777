"""`digitlab ui`: the Streamlit command line, the packaged config, and the app script's imports."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from digitlab.ui import launch


def test_streamlit_command_runs_the_packaged_app():
    cmd = launch.streamlit_command("0.0.0.0", 8601)
    assert cmd[:4] == [sys.executable, "-m", "digitlab.ui.warm_start", "run"]  # `streamlit run`, warmed
    assert Path(cmd[4]) == launch.APP and launch.APP.exists()
    opts = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert opts["--server.address"] == "0.0.0.0" and opts["--server.port"] == "8601"
    assert opts["--server.headless"] == "true" and opts["--browser.gatherUsageStats"] == "false"


def test_config_sits_next_to_the_app_and_hides_tracebacks():
    config = tomllib.loads((launch.APP.parent / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] == "none"
    assert config["theme"]["primaryColor"].startswith("#")


def test_run_ui_returns_streamlit_exit_code(monkeypatch):
    calls = {}

    class FakePopen:
        def __init__(self, cmd, env):
            calls["cmd"], calls["env"] = cmd, env
            self.returncode = 3

        def wait(self, timeout=None):
            return 3

        def poll(self):
            return 3

    monkeypatch.setattr(launch.subprocess, "Popen", FakePopen)
    monkeypatch.setenv("DIGITLAB_API_URL", "http://api.example:9000")
    assert launch.run_ui("127.0.0.1", 8765) == 3
    assert calls["env"]["DIGITLAB_API_URL"] == "http://api.example:9000"
    assert "8765" in calls["cmd"]


def test_pages_and_assets_exist():
    ui = launch.APP.parent
    for page in ("draw", "compare", "history", "models", "about"):
        assert (ui / "views" / f"{page}.py").exists()
    for asset in (
        "icon.png",
        "mnist_samples.png",
        "pipeline_drawing.png",
        "pipeline_ink.png",
        "pipeline_input.png",
    ):
        assert (ui / "assets" / asset).stat().st_size < 50_000
