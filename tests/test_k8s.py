"""The Kubernetes manifests (deploy/k8s), checked without a cluster.

- `kubectl kustomize` renders the base and both overlays; every rendered object passes
  `kubernetes-validate --strict` (Kubernetes 1.30 and 1.37), except the custom resources listed in
  CUSTOM_RESOURCES, which are skipped by name; `checkov` finds nothing in what the overlays render
  (each check skipped in a manifest carries its reason beside it);
- the rendered objects have the properties the deployment relies on (probes, limits, non-root, a
  read-only root filesystem where every folder digitlab writes is an emptyDir volume, no Secret values, selectors that match,
  a preStop hook that fits in the grace period), and every variable they set is in the README's
  configuration reference;
- the containers' commands, as the example overlay declares them, run here as local processes with the
  environment the manifests give them (ports, paths and the database address mapped to this machine):
  the migrations Job, two API pods with separate spool volumes, the UI pointed at the API Service. See
  `test_manifest_commands_serve_store_and_drain_their_spools`.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from api.tcp_proxy import TcpProxy
from digitlab.api.upkeep import sample_drawing

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"
EXAMPLE = K8S / "overlays" / "example"
CNPG = K8S / "overlays" / "cloudnativepg"
KUSTOMIZATIONS = [BASE, EXAMPLE, CNPG]
OVERLAYS = [EXAMPLE, CNPG]  # what an operator applies; the base alone has no namespace
#: Kinds no offline schema knows: skipped by kubernetes-validate, checked by the tests below instead.
CUSTOM_RESOURCES = {("postgresql.cnpg.io/v1", "Cluster")}
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]  # the oldest supported release and the newest schemas
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BIN = Path(sys.executable).parent


def find_tool(name: str, *extra: Path) -> str:
    """A tool from this environment, the tools venv (.ci/run makes .venv-tools for checkov) or PATH.
    Missing: a failure in CI (.ci/run installs them), a skip on a developer's machine."""
    for candidate in (BIN / name, *extra):
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed (see .ci/run)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def render(kustomization: Path) -> list[dict]:
    """`kustomize build`, through the kustomize built into kubectl (offline)."""
    kubectl = find_tool("kubectl")
    result = subprocess.run([kubectl, "kustomize", str(kustomization)], capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_spec(workload: dict) -> dict:
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return workload["spec"]["template"]["spec"]


def workloads(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] in ("Deployment", "Job", "CronJob")]


def container(workload: dict, name: str | None = None) -> dict:
    containers = pod_spec(workload)["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


@pytest.fixture(scope="module")
def rendered() -> dict[Path, list[dict]]:
    return {k: render(k) for k in KUSTOMIZATIONS}


# --------------------------------------------------------------------------------------------------
# offline validation


def test_every_manifest_passes_kubernetes_validate_strict(rendered, tmp_path):
    validate = find_tool("kubernetes-validate")
    skipped = set()
    for kustomization, objects in rendered.items():
        plain = [o for o in objects if (o["apiVersion"], o["kind"]) not in CUSTOM_RESOURCES]
        skipped |= {(o["apiVersion"], o["kind"]) for o in objects} - {(o["apiVersion"], o["kind"]) for o in plain}
        out = tmp_path / f"{kustomization.name}.yaml"
        out.write_text(yaml.safe_dump_all(plain, sort_keys=False))
        for version in KUBERNETES_VERSIONS:
            result = subprocess.run([validate, "--strict", "--quiet", "-k", version, str(out)],
                                    capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
            output = result.stdout + result.stderr
            assert result.returncode == 0, f"{kustomization} (Kubernetes {version}):\n{output}"
            # a kind without a schema is only a warning to the tool: it must be listed in CUSTOM_RESOURCES
            assert "find schema" not in output, output
    assert skipped == CUSTOM_RESOURCES, "CUSTOM_RESOURCES lists exactly the custom resources the overlays use"


def test_every_manifest_file_is_rendered(rendered):
    """No file under deploy/k8s is left out of every kustomization (it would never be validated)."""
    used: set[Path] = set()
    for kustomization in KUSTOMIZATIONS:
        config = yaml.safe_load((kustomization / "kustomization.yaml").read_text())
        used |= {(kustomization / r).resolve() for r in config.get("resources", [])}
        used |= {(kustomization / p["path"]).resolve() for p in config.get("patches", []) if "path" in p}
    files = {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert files - used == set()


def test_checkov_finds_nothing(rendered, tmp_path):
    checkov = find_tool("checkov", REPO / ".venv-tools" / "bin" / "checkov")
    for overlay in OVERLAYS:
        out = tmp_path / f"{overlay.name}.yaml"
        out.write_text(yaml.safe_dump_all(rendered[overlay], sort_keys=False))
        result = subprocess.run(
            [checkov, "--framework", "kubernetes", "-f", str(out), "--skip-download", "--output", "json"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        report = json.loads(result.stdout)
        summary = report["summary"]
        failed = [f"{c['check_id']} {c['check_name']} ({c['resource']})" for c in report["results"]["failed_checks"]]
        assert not failed and summary["parsing_errors"] == 0, failed
        assert summary["passed"] > 100 and summary["resource_count"] >= 10, summary
        for check in report["results"]["skipped_checks"]:
            reason = (check.get("check_result") or {}).get("suppress_comment") or ""
            assert len(reason) > 20, f"{check['check_id']} skipped in {check['resource']} without a reason"


# --------------------------------------------------------------------------------------------------
# what the deployment relies on


def test_api_pods_are_probed_limited_and_locked_down(rendered):
    for objects in rendered.values():
        api = by_kind(objects, "Deployment")["digitlab-api"]
        spec, main = pod_spec(api), container(api, "api")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert main[probe]["httpGet"]["path"] == "/health", probe
        assert api["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        for workload in workloads(objects):
            spec = pod_spec(workload)
            assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] >= 10000
            assert spec["automountServiceAccountToken"] is False
            for c in spec["containers"]:
                assert c["securityContext"]["readOnlyRootFilesystem"] is True
                assert c["securityContext"]["allowPrivilegeEscalation"] is False
                assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
                assert {"cpu", "memory"} <= set(c["resources"]["requests"]) & set(c["resources"]["limits"])
            # Nothing shared on disk: PostgreSQL is the only shared state, models are in the image.
            for volume in spec.get("volumes", []):
                assert set(volume) == {"name", "emptyDir"}, volume


def test_each_api_pod_writes_only_to_its_own_volumes(rendered):
    for objects in rendered.values():
        api = by_kind(objects, "Deployment")["digitlab-api"]
        config = by_kind(objects, "ConfigMap")["digitlab-config"]["data"]
        mounts = container(api, "api")["volumeMounts"]
        assert sorted(m["mountPath"] for m in mounts) == sorted([config["DIGITLAB_DATA_DIR"], "/tmp"])
        assert "DIGITLAB_SPOOL_DIR" not in env_names(objects, api), (
            "the default spool dir is per process (<data dir>/spool/<pod>-<pid>)"
        )
        assert config["DIGITLAB_WORKERS"] == "1", "one worker per pod: /health (and preStop) speak for the pod"


def test_every_folder_digitlab_writes_is_a_volume_on_the_read_only_root(rendered):
    """`digitlab serve` refuses a DIGITLAB_DATA_DIR it cannot write (the spool, an export, several workers'
    metrics go there) and libraries write temporary files to /tmp: on a read-only root filesystem both must be
    volumes (the API pods crash-looped on "DIGITLAB_DATA_DIR=/app/data is not writable")."""
    for objects in rendered.values():
        config = by_kind(objects, "ConfigMap")["digitlab-config"]["data"]
        for workload in workloads(objects):
            for c in pod_spec(workload)["containers"]:
                if c.get("command", [""])[0] != "digitlab" or c["command"][1] not in ("serve", "learn"):
                    continue
                mounted = {m["mountPath"] for m in c.get("volumeMounts", [])}
                assert {config["DIGITLAB_DATA_DIR"], "/tmp"} <= mounted, (workload["metadata"]["name"], mounted)


def prestop(api: dict) -> tuple[list[str], float, float]:
    """The preStop command, its deadline and its initial wait (seconds)."""
    command = container(api, "api")["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["python", "-c"]
    return command, float(command[3]), float(command[4])


def test_prestop_fits_in_the_grace_period(rendered):
    api = by_kind(rendered[EXAMPLE], "Deployment")["digitlab-api"]
    _, deadline, first_wait = prestop(api)
    grace = pod_spec(api)["terminationGracePeriodSeconds"]
    # after preStop: uvicorn's graceful stop (10 s, api/server.py) and the store's close (10 s)
    assert first_wait < deadline and deadline + 10 + 10 <= grace


def test_services_hpa_and_pdb_select_the_right_pods(rendered):
    for objects in rendered.values():
        deployments = by_kind(objects, "Deployment")
        for service in by_kind(objects, "Service").values():
            selector = service["spec"]["selector"]
            chosen = [d for d in deployments.values()
                      if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]  # fmt: skip
            assert len(chosen) == 1, service["metadata"]["name"]
            ports = {p["name"] for c in pod_spec(chosen[0])["containers"] for p in c.get("ports", [])}
            assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
        api_labels = deployments["digitlab-api"]["spec"]["template"]["metadata"]["labels"]
        pdb = by_kind(objects, "PodDisruptionBudget")["digitlab-api"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= api_labels.items()
        hpa = by_kind(objects, "HorizontalPodAutoscaler")["digitlab-api"]
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "digitlab-api"}
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        assert hpa["spec"]["minReplicas"] >= 2 and pdb["spec"]["maxUnavailable"] == 1


def test_servers_listen_on_their_declared_ports(rendered):
    """The port each server is told to listen on is its declared container port (probes, Services and the
    preStop hook's /health call all go there)."""
    for objects in rendered.values():
        for name, variable in (("digitlab-api", "DIGITLAB_PORT"), ("digitlab-ui", "DIGITLAB_UI_PORT")):
            spec = pod_spec(by_kind(objects, "Deployment")[name])["containers"][0]
            value = next(e["value"] for e in spec["env"] if e["name"] == variable)
            assert [p["containerPort"] for p in spec["ports"]] == [int(value)]


def test_ui_points_at_the_api_service(rendered):
    for objects in rendered.values():
        ui = container(by_kind(objects, "Deployment")["digitlab-ui"], "ui")
        url = urlsplit(next(e["value"] for e in ui["env"] if e["name"] == "DIGITLAB_API_URL"))
        service = by_kind(objects, "Service")[url.hostname]
        assert url.port in [p["port"] for p in service["spec"]["ports"]]
        assert service["spec"]["selector"]["app.kubernetes.io/component"] == "api"
        assert "DATABASE_URL" not in {e["name"] for e in ui["env"]}, "the UI never touches the database"


def test_jobs_run_the_migrations_and_the_learning(rendered):
    for objects in rendered.values():
        assert container(by_kind(objects, "Job")["digitlab-migrate"])["command"] == ["digitlab", "db", "upgrade"]
        learn = by_kind(objects, "CronJob")["digitlab-learn"]
        assert container(learn)["command"][:2] == ["digitlab", "learn"]
        assert learn["spec"]["concurrencyPolicy"] == "Forbid"


def test_no_secret_value_in_any_manifest(rendered):
    secret_like = re.compile(r"PASSWORD|TOKEN|SECRET|DATABASE_URL")
    for path in K8S.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            assert (doc or {}).get("kind") != "Secret", f"{path}: Secrets are created by the operator"
    for objects in rendered.values():
        assert not by_kind(objects, "Secret")
        for workload in workloads(objects):
            for c in pod_spec(workload)["containers"]:
                for e in c.get("env", []):
                    if secret_like.search(e["name"]):
                        assert "value" not in e and "secretKeyRef" in e["valueFrom"], e
        for config in by_kind(objects, "ConfigMap").values():
            assert not [k for k in config["data"] if secret_like.search(k)]


def test_overlays_pin_their_images(rendered):
    for overlay in OVERLAYS:
        for workload in workloads(rendered[overlay]):
            for c in pod_spec(workload)["containers"]:
                name, _, tag = c["image"].rpartition(":")
                assert name and tag and tag != "latest", c["image"]


def test_cloudnativepg_overlay_uses_the_operators_secret_and_service(rendered):
    objects = rendered[CNPG]
    cluster = next(o for o in objects if o["kind"] == "Cluster")
    name = cluster["metadata"]["name"]
    owner = cluster["spec"]["bootstrap"]["initdb"]["owner"]
    config = by_kind(objects, "ConfigMap")["digitlab-config"]["data"]
    assert config["POSTGRES_HOST"] == f"{name}-rw"  # the operator's read-write Service
    assert config["POSTGRES_DB"] == cluster["spec"]["bootstrap"]["initdb"]["database"]
    assert cluster["metadata"]["namespace"] == by_kind(objects, "Deployment")["digitlab-api"]["metadata"]["namespace"]
    assert owner and cluster["spec"]["instances"] >= 2
    for workload in workloads(objects):
        env = {e["name"]: e for e in pod_spec(workload)["containers"][0]["env"]}
        assert "DATABASE_URL" not in env, "it would win over POSTGRES_*"
        if workload["metadata"]["name"] == "digitlab-ui":
            assert "POSTGRES_PASSWORD" not in env, "the UI never touches the database"
            continue
        for key, variable in (("username", "POSTGRES_USER"), ("password", "POSTGRES_PASSWORD")):
            assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": f"{name}-app", "key": key}


def env_names(objects: list[dict], workload: dict) -> set[str]:
    """Every variable a workload's containers get: `env` and the keys of the ConfigMaps in `envFrom`."""
    configs = by_kind(objects, "ConfigMap")
    names = set()
    for c in pod_spec(workload)["containers"]:
        names |= {e["name"] for e in c.get("env", [])}
        for source in c.get("envFrom", []):
            assert "configMapRef" in source, "only ConfigMaps in envFrom (their keys are known)"
            names |= set(configs[source["configMapRef"]["name"]]["data"])
    return names


def test_readme_configuration_reference_covers_every_variable_the_manifests_set(rendered):
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Configuration\n")[1].split("\n## ")[0]
    documented = set(re.findall(r"^\| `(\w+)`", section, re.MULTILINE))
    documented |= set(re.findall(r"\(or `(\w+)`\)", section))
    assert {"DATABASE_URL", "DIGITLAB_WORKERS"} <= documented
    for objects in rendered.values():
        for workload in workloads(objects):
            missing = env_names(objects, workload) - documented
            assert not missing, f"{workload['metadata']['name']} sets variables the README does not list: {missing}"


# --------------------------------------------------------------------------------------------------
# the manifests' commands as local processes, on the real PostgreSQL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


class LocalPod:
    """One container of a rendered workload as a local process: its `command`, its environment built
    the way the kubelet builds it (ConfigMaps, Secrets, values), then mapped to this machine:

    - the container's filesystem is a folder (`root`): absolute paths in the environment point into it,
      HOME and TMPDIR too; volumes are folders at their mount paths inside it. After the run, nothing
      may have been written outside the volumes (the root filesystem is read-only in the cluster);
    - declared container ports become free local ports (DIGITLAB_PORT / DIGITLAB_UI_PORT), bind
      addresses 127.0.0.1, and Service URLs (http://<service>:<port>) the local address of a pod the
      Service selects;
    - the Secrets are given by the test (`secrets`: {(secret, key): value}).
    """

    PORT_VARIABLES = ("DIGITLAB_PORT", "DIGITLAB_UI_PORT")
    BIND_VARIABLES = ("DIGITLAB_HOST", "DIGITLAB_UI_HOST")

    def __init__(self, name: str, objects: list[dict], workload: dict, container_name: str, *, root: Path,
                 secrets: dict, services: dict[str, str] | None = None):  # fmt: skip
        self.name, self.root = name, root
        self.spec = container(workload, container_name)
        self.grace = pod_spec(workload).get("terminationGracePeriodSeconds", 30)
        self.ports = {p["name"]: (p["containerPort"], free_port()) for p in self.spec.get("ports", [])}
        self.volumes = [root / m["mountPath"].lstrip("/") for m in self.spec.get("volumeMounts", [])]
        for folder in (*self.volumes, root / "tmp", root / "home" / "digitlab"):
            folder.mkdir(parents=True, exist_ok=True)
        self.env = self._environment(objects, secrets, services or {})
        self.image_files = self._files()  # what "the image" holds before the container runs
        self.log = root.parent / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def _environment(self, objects: list[dict], secrets: dict, services: dict[str, str]) -> dict[str, str]:
        declared: dict[str, str] = {}
        configs = by_kind(objects, "ConfigMap")
        for source in self.spec.get("envFrom", []):
            declared.update(configs[source["configMapRef"]["name"]]["data"])
        for e in self.spec.get("env", []):
            if "value" in e:
                declared[e["name"]] = e["value"]
                continue
            ref = e["valueFrom"]["secretKeyRef"]
            if (ref["name"], ref["key"]) in secrets:
                declared[e["name"]] = secrets[ref["name"], ref["key"]]
            else:
                assert ref.get("optional"), f"{self.name}: Secret {ref['name']}/{ref['key']} is required"
        self.declared = dict(declared)
        container_ports = {str(port): str(local) for port, local in self.ports.values()}
        for key, value in declared.items():
            if key in self.PORT_VARIABLES and value in container_ports:
                declared[key] = container_ports[value]
            elif key in self.BIND_VARIABLES:
                declared[key] = "127.0.0.1"
            elif value.startswith("/"):
                declared[key] = str(self.root / value.lstrip("/"))
            elif value.startswith("http://"):
                url = urlsplit(value)
                declared[key] = services[f"{url.hostname}:{url.port}"]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DIGITLAB_", "POSTGRES_")) and k != "DATABASE_URL"}  # fmt: skip
        env.update(declared, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONUNBUFFERED="1",
                   HOME=str(self.root / "home" / "digitlab"), TMPDIR=str(self.root / "tmp"))  # fmt: skip
        return env

    def _files(self) -> set[Path]:
        return {p for p in self.root.rglob("*") if p.is_file()}

    def written_outside_volumes(self) -> list[Path]:
        return sorted(p for p in self._files() - self.image_files
                      if not any(p.is_relative_to(v) for v in self.volumes))  # fmt: skip

    def local_url(self, port_name: str = "http") -> str:
        return f"http://127.0.0.1:{self.ports[port_name][1]}"

    def run(self, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(self.spec["command"], env=self.env, cwd=self.root, capture_output=True, text=True,
                              timeout=timeout, check=False)  # fmt: skip

    def start(self) -> LocalPod:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.spec["command"], env=self.env, cwd=self.root, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)  # fmt: skip
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def probe_url(self, probe: str) -> str:
        get = self.spec[probe]["httpGet"]
        return f"http://127.0.0.1:{self.ports[get['port']][1]}{get['path']}"

    def wait_ready(self, timeout: float = 60) -> None:
        """The startup probe, then the readiness probe, as the manifest declares them."""
        deadline = time.monotonic() + timeout
        for probe in ("startupProbe", "readinessProbe"):
            while not _http_ok(self.probe_url(probe)):
                if self.proc.poll() is not None:
                    pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{self.output()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"{self.name}: {probe} failing after {timeout:.0f} s:\n{self.output()}")
                time.sleep(0.2)

    def prestop(self) -> subprocess.Popen:
        """The preStop hook, run as the kubelet would: inside the container, with its environment."""
        return subprocess.Popen(self.spec["lifecycle"]["preStop"]["exec"]["command"], env=self.env, cwd=self.root,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signum)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(5)


def _stored(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [row.uid for row in conn.execute(text("SELECT uid FROM user_predictions"))]
    finally:
        engine.dispose()


def _pending_in(folder: Path) -> int:
    """Spooled records not yet in the database, in every spool under `folder` (what would be lost if the
    folder went away now)."""
    return sum(len(p.read_text().splitlines()) for p in folder.rglob("spool.jsonl"))


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)
    return value


@pytest.mark.postgres
def test_manifest_commands_serve_store_and_drain_their_spools(tmp_path, postgres_url):
    """The example overlay's containers as local processes on a throw-away PostgreSQL database, reached
    through a TCP proxy the test cuts to make an outage:

    1. the migrations Job's command migrates the empty database;
    2. two API pods (each its own spool volume) and the UI (its DIGITLAB_API_URL resolved through the
       API Service) start and pass their probes; predictions through both APIs and through the UI's
       client are each stored exactly once;
    3. database outage: both API pods answer and spool. Pod B's process gets SIGTERM during the outage,
       stops within its grace period leaving its spool on the volume, and its container is restarted in
       the same pod (same volume). Pod A is deleted: its preStop hook runs, waits while the database is
       away, and returns once the database is back and its spool is drained; then SIGTERM, and A exits
       within the grace period. So A's spooled predictions reach the database BEFORE EXIT, within the
       grace period (its volume is then empty: deleting it loses nothing); B's reach it AFTER THE
       RESTART (the new process adopts the spool it finds on the volume);
    4. every answered prediction is in the table exactly once, and no process wrote outside its volumes.
    """
    objects = render(EXAMPLE)
    deployments = by_kind(objects, "Deployment")
    url = make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    secrets = {("digitlab-database", "DATABASE_URL"): proxied}
    pods: list[LocalPod] = []

    def api_pod(name: str) -> LocalPod:
        return LocalPod(name, objects, deployments["digitlab-api"], "api", root=tmp_path / name, secrets=secrets)

    try:
        # 1. migrations
        migrate = LocalPod("migrate", objects, by_kind(objects, "Job")["digitlab-migrate"], "migrate",
                           root=tmp_path / "migrate", secrets=secrets)  # fmt: skip
        done = migrate.run()
        assert done.returncode == 0 and "(head)" in done.stdout, done.stdout + done.stderr
        assert _stored(postgres_url) == []  # the table exists

        # 2. two API pods and the UI
        a, b = api_pod("api-a").start(), api_pod("api-b").start()
        pods += [a, b]
        assert a.env["DATABASE_URL"] == proxied and a.declared["DIGITLAB_DATA_DIR"] == "/app/data"
        a.wait_ready()
        b.wait_ready()
        api_port = next(p["port"] for p in by_kind(objects, "Service")["digitlab-api"]["spec"]["ports"])
        ui = LocalPod("ui", objects, deployments["digitlab-ui"], "ui", root=tmp_path / "ui", secrets=secrets,
                      services={f"digitlab-api:{api_port}": a.local_url()}).start()  # fmt: skip
        pods.append(ui)
        assert "DATABASE_URL" not in ui.env
        ui.wait_ready()

        answered: list[dict] = []
        lock = threading.Lock()

        def predict(pod: LocalPod) -> dict:
            response = httpx.post(f"{pod.local_url()}/api/v1/predict", timeout=30,
                                  files={"image": ("d.png", sample_drawing(), "image/png")})  # fmt: skip
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["logged"] is True
            with lock:
                answered.append(body)
            return body

        from digitlab.ui.client import DigitlabClient

        client = DigitlabClient(ui.env["DIGITLAB_API_URL"])  # the UI's own client, from the UI's environment
        try:
            via_ui = client.predict(sample_drawing(), None, session_id="k8s-test")
        finally:
            client.close()
        assert via_ui.logged and via_ui.id is not None
        with ThreadPoolExecutor(6) as pool:
            direct = list(pool.map(predict, [a, b] * 12))
        assert all(p["id"] is not None for p in direct)
        assert sorted(_stored(postgres_url)) == sorted([via_ui.uid, *(p["uid"] for p in answered)])

        # 3. outage: both pods spool
        proxy.stop()
        with ThreadPoolExecutor(4) as pool:
            spooled = list(pool.map(predict, [a, b] * 5))
        assert all(p["id"] is None for p in spooled), "answered from the spool during the outage"
        for pod in (a, b):
            health = httpx.get(f"{pod.local_url()}/health", timeout=5).json()
            assert health["database"] == "unavailable" and health["spool"] >= 5
            assert _pending_in(pod.volumes[0]) >= 5

        # B: SIGTERM during the outage; the process stops within the grace period, leaving its spool on the
        # volume, and its container is restarted in the same pod (same volume).
        stopping = time.monotonic()
        b.signal(signal.SIGTERM)
        b.proc.wait(b.grace)
        b_stop_seconds = time.monotonic() - stopping
        assert "Application shutdown complete" in b.output()
        assert _pending_in(b.volumes[0]) >= 5, "the spool stays on the volume"
        b.start().wait_ready()

        # A: the pod is deleted. preStop first; it must keep waiting while the database is away.
        started = time.monotonic()
        hook = a.prestop()
        time.sleep(prestop(deployments["digitlab-api"])[2] + 1.5)
        assert hook.poll() is None, "preStop returned while the spool still waited for the database"
        proxy.start()  # the database is back
        hook_output, _ = hook.communicate(timeout=60)
        assert hook.returncode == 0, hook_output
        assert _pending_in(a.volumes[0]) == 0, "preStop returned with predictions still spooled"
        a.signal(signal.SIGTERM)
        a.proc.wait(a.grace - (time.monotonic() - started))
        # uvicorn re-raises the SIGTERM after its graceful shutdown (exit status 143 in the cluster)
        assert a.proc.returncode in (0, -signal.SIGTERM), a.output()
        assert "Application shutdown complete" in a.output()
        assert time.monotonic() - started < a.grace
        assert _pending_in(a.volumes[0]) == 0, "nothing left for the volume to take away"

        # B replays the spool its previous container left.
        _wait_for(lambda: httpx.get(f"{b.local_url()}/health", timeout=5).json()["spool"] == 0, 60, "B drained")
        assert _pending_in(b.volumes[0]) == 0

        print(f"\nB stopped in {b_stop_seconds:.1f} s during the outage; A: preStop to exit "
              f"{time.monotonic() - started:.1f} s")  # fmt: skip

        # 4. every answered prediction exactly once
        stored = _stored(postgres_url)
        assert len(answered) == 24 + 10
        assert sorted(stored) == sorted([via_ui.uid, *(p["uid"] for p in answered)]), "each stored exactly once"
        for pod in (migrate, a, b, ui):
            assert pod.written_outside_volumes() == [], f"{pod.name} wrote outside its volumes"
    finally:
        for pod in pods:
            pod.stop()
        proxy.stop()
    assert "Traceback" not in a.output() + b.output(), a.output() + b.output()
