"""Model versions and learning jobs in the database (tables of migration 0004), as parameterised statements.

The database is the only state API replicas share, so a learned model lives in it: artefact bytes,
manifest and SHA-256. At most one version per model is `promoted` (served); a promotion retires the
previous one, a rollback re-promotes the newest retired one. Learning jobs keep their progress here, so
any replica can answer for a job another one started.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, literal, select, text, update

from digitlab.errors import DigitlabError
from digitlab.models.artifacts import ArtifactError, sha256_bytes
from digitlab.store.models import JOBS, VERSIONS
from digitlab.store.records import utc_now

STATUSES = ("promoted", "candidate", "rejected", "retired")


#: a learning job still queued after this never started (the process that was to run it died)
STALE_QUEUED = timedelta(minutes=10)
#: a queued job whose process has not begun this long after it was created, while no run holds the learning
#: lock, never will (a run takes the lock within seconds of its start)
NEVER_STARTED = timedelta(seconds=60)
#: a running job whose run has not said it is alive for this long is dead once the learning lock is free (its
#: lock keeper beats every `db.KEEP_SECONDS`, 5 s; a dropped lock connection frees the lock for up to 5 s)
DEAD_AFTER = timedelta(seconds=30)
_JOB_LOCK = 0x6A_6F_62_73  # "jobs": pg_advisory_xact_lock key while a job is created



@dataclass(frozen=True)
class VersionInfo:
    """A model version without its artefact bytes."""

    name: str
    version: str
    parent_version: str | None
    status: str
    reason: str | None
    created_at: datetime
    promoted_at: datetime | None
    sha256: str
    manifest: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "manifest"}
        out["created_at"] = self.created_at.replace(tzinfo=UTC).isoformat()
        out["promoted_at"] = self.promoted_at.replace(tzinfo=UTC).isoformat() if self.promoted_at else None
        out["metrics"] = self.manifest.get("metrics", {})
        out["data"] = self.manifest.get("data", {})
        return out


_INFO_COLUMNS = [VERSIONS.c[n] for n in ("name", "version", "parent_version", "status", "reason", "created_at",
                                          "promoted_at", "sha256", "manifest")]  # fmt: skip


def _info(row) -> VersionInfo:
    data = dict(row._mapping)
    data["manifest"] = json.loads(data["manifest"])
    return VersionInfo(**data)


HAND, ROLLED_BACK, _GATE = "promoted by hand", "rolled back", " (the gate had rejected it: "


def keeping_the_gate(action: str, before: str | None) -> str:
    """A version's reason after a hand promotion or a rollback: the action, and why the gate rejected it if it
    did (a rejected version promoted by hand, then rolled back, said only "rolled back": the gate's "worse than the
    served version on the held-out users' drawings" was gone)."""
    gate = before or ""
    if gate.startswith((HAND, ROLLED_BACK)):  # ours: the gate's reason, if any, is inside
        gate = gate.partition(_GATE)[2].removesuffix(")")
    return f"{action}{_GATE}{gate})" if gate else action


class VersionStore:
    """Every statement on `model_versions` and `learn_jobs`."""

    def __init__(self, engine: Engine):
        self.engine = engine

    # --- versions ------------------------------------------------------------------------------------
    def next_version(self, name: str) -> str:
        """The next version number of `name` ("2", "3", ...; the files' version counts as "1")."""
        with self.engine.connect() as conn:
            versions = conn.scalars(select(VERSIONS.c.version).where(VERSIONS.c.name == name)).all()
        numbers = [int(v) for v in versions if v.isdigit()]
        return str(max([1, *numbers]) + 1)

    def add(self, name: str, version: str, payload: bytes, manifest: dict, *, status: str,
            parent: str | None, reason: str | None = None) -> VersionInfo:  # fmt: skip
        """Store a built version (a candidate, promoted or rejected); promoting it retires the served one."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        now = utc_now()
        sha = sha256_bytes(payload)  # the manifest names its own file (a fine-tuned CNN's named its parent's)
        row = {
            "name": name, "version": version, "parent_version": parent, "status": "candidate", "reason": reason,
            "created_at": now, "promoted_at": None, "sha256": sha,
            "manifest": json.dumps({**manifest, "sha256": sha, "size_bytes": len(payload)}), "artifact": payload,
        }  # fmt: skip
        with self.engine.begin() as conn:
            conn.execute(insert(VERSIONS).values(row))
            if status == "promoted":
                self._promote(conn, name, version, now)
            elif status != "candidate":
                conn.execute(self._where(name, version, update(VERSIONS)).values(status=status))
        return self.get(name, version)

    @staticmethod
    def _reason_of(conn, name: str, version: str) -> str | None:
        return conn.scalar(VersionStore._where(name, version, select(VERSIONS.c.reason)))

    @staticmethod
    def _where(name: str, version: str, stmt):
        return stmt.where(VERSIONS.c.name == name, VERSIONS.c.version == version)

    def _promote(self, conn, name: str, version: str, now: datetime, reason: str | None = None) -> None:
        conn.execute(
            update(VERSIONS).where(VERSIONS.c.name == name, VERSIONS.c.status == "promoted").values(status="retired")
        )
        conn.execute(self._where(name, version, update(VERSIONS)).values(status="promoted", promoted_at=now,
                                                                         reason=reason))  # (not "rolled back")

    def promote(self, name: str, version: str) -> VersionInfo:
        """Serve `version` of `name` from now on (the served one is retired)."""
        with self.engine.begin() as conn:
            if conn.scalar(self._where(name, version, select(VERSIONS.c.id))) is None:
                raise DigitlabError(f"model {name!r} has no learned version {version!r}: see `digitlab models list` "
                                    "(the version of the model files, the first, is served again by `digitlab "
                                    f"models rollback {name}` until no learned version is left).",
                                    code="version_not_found")  # fmt: skip
        if self.promoted().get(name, ("",))[0] == version:  # served already: its reason is kept as it is
            return self.get(name, version)
        try:  # a version no API could load was "promoted" (the APIs kept the old one, a new one the files)
            self.load(name, version)
        except ArtifactError as exc:
            raise DigitlabError(f"{exc} Not promoted.", code="version_damaged") from exc
        with self.engine.begin() as conn:
            reason = keeping_the_gate(HAND, self._reason_of(conn, name, version))
            self._promote(conn, name, version, utc_now(), reason=reason)
        return self.get(name, version)

    def rollback(self, name: str) -> VersionInfo | None:
        """Stop serving the promoted version (it becomes `rejected`, reason "rolled back") and re-promote the
        newest retired one; None when there is none (the model's files are served again)."""
        with self.engine.begin() as conn:
            current = conn.scalar(
                select(VERSIONS.c.version).where(VERSIONS.c.name == name, VERSIONS.c.status == "promoted")
            )
            if current is None:
                raise DigitlabError(f"no learned version of {name!r} is promoted: nothing to roll back.",
                                    code="nothing_to_roll_back")  # fmt: skip
            reason = keeping_the_gate(ROLLED_BACK, self._reason_of(conn, name, current))
            conn.execute(self._where(name, current, update(VERSIONS)).values(status="rejected", reason=reason))
            previous = conn.scalar(
                select(VERSIONS.c.version)
                .where(VERSIONS.c.name == name, VERSIONS.c.status == "retired")
                .order_by(VERSIONS.c.promoted_at.desc(), VERSIONS.c.id.desc())
                .limit(1)
            )
            if previous is None:
                return None
            self._promote(conn, name, previous, utc_now())
        return self.get(name, previous)

    def get(self, name: str, version: str) -> VersionInfo | None:
        with self.engine.connect() as conn:
            row = conn.execute(self._where(name, version, select(*_INFO_COLUMNS))).first()
        return _info(row) if row else None

    def list(self, name: str | None = None) -> list[VersionInfo]:
        """Every version (of `name`, or of all models), newest first."""
        stmt = select(*_INFO_COLUMNS).order_by(VERSIONS.c.name, VERSIONS.c.id.desc())
        if name is not None:
            stmt = stmt.where(VERSIONS.c.name == name)
        with self.engine.connect() as conn:
            return [_info(row) for row in conn.execute(stmt)]

    def promoted(self) -> dict[str, tuple[str, str]]:
        """{model name: (version, sha256)} of the promoted versions: a cheap poll (no artefact bytes)."""
        stmt = select(VERSIONS.c.name, VERSIONS.c.version, VERSIONS.c.sha256).where(VERSIONS.c.status == "promoted")
        with self.engine.connect() as conn:
            return {name: (version, sha) for name, version, sha in conn.execute(stmt)}

    def load(self, name: str, version: str) -> tuple[dict, bytes]:
        """The manifest and artefact bytes of a version, only if the bytes hash to its SHA-256."""
        stmt = self._where(name, version, select(VERSIONS.c.manifest, VERSIONS.c.artifact, VERSIONS.c.sha256))
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            raise ArtifactError(f"model {name!r} version {version!r} is not in the database.")
        manifest, payload, sha = json.loads(row.manifest), bytes(row.artifact), row.sha256
        if sha256_bytes(payload) != sha:
            raise ArtifactError(f"model {name!r} version {version!r}: the stored bytes do not match their SHA-256.")
        return manifest, payload

    # --- learning jobs -------------------------------------------------------------------------------
    def create_job(self) -> str:
        """A new queued job; returns its id."""
        job_id = uuid.uuid4().hex
        with self.engine.begin() as conn:
            conn.execute(insert(JOBS).values(id=job_id, status="queued", created_at=utc_now(), progress=0.0))
        return job_id

    def create_job_if_idle(self, job_id: str | None = None, stale_after: timedelta = STALE_QUEUED) -> str | None:
        """A new queued job (`job_id`, else a new id), or None when one is queued or running already: one
        statement (and on PostgreSQL a transaction lock), so that simultaneous requests start one run, not one
        each. A job still queued after `stale_after` never started (its process died): it no longer counts."""
        job_id = job_id or uuid.uuid4().hex
        busy = select(JOBS.c.id).where(
            (JOBS.c.status == "running") | ((JOBS.c.status == "queued") & (JOBS.c.created_at > utc_now() - stale_after))
        )
        values = select(
            literal(job_id).label("id"), literal("queued").label("status"), literal(utc_now()).label("created_at"),
            literal(0.0).label("progress"),
        ).where(~busy.exists())  # fmt: skip
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _JOB_LOCK})
            stmt = insert(JOBS).from_select(["id", "status", "created_at", "progress"], values).returning(JOBS.c.id)
            return conn.execute(stmt).scalar()  # None: nothing inserted

    def abandon_job(self, job_id: str, message: str) -> bool | None:
        """Mark a job still queued failed (its request gave up on it: no run will begin). True if it was, False
        if it is there but no longer queued, None if it is not there (yet)."""
        now = utc_now()
        with self.engine.begin() as conn:
            if conn.execute(update(JOBS).where((JOBS.c.id == job_id) & (JOBS.c.status == "queued")).values(
                status="failed", message=message, finished_at=now,
            )).rowcount:  # fmt: skip
                return True
            return False if conn.scalar(select(JOBS.c.id).where(JOBS.c.id == job_id)) else None

    def busy_job(self) -> str | None:
        """The id of the job running (or queued), newest first; None when none is."""
        query = select(JOBS.c.id).where(JOBS.c.status.in_(("running", "queued"))).order_by(JOBS.c.created_at.desc())
        with self.engine.connect() as conn:
            return conn.scalars(query.limit(1)).first()

    def fail_interrupted_jobs(self, never_started: timedelta = NEVER_STARTED) -> int:
        """Mark jobs still 'running' with no heartbeat for `DEAD_AFTER`, and jobs still 'queued' `never_started`
        after they were created, as failed: called while holding the learning lock, so no run holds it; those
        were killed half-way, or their process never began (it died at start, or the request that queued one
        was answered 503 while the database hung and the row arrived after: it blocked "Learn now" with 409
        for 10 minutes). A running job whose heartbeat is fresh is alive, its lock's connection just dropped
        (the lock is free on the server until the run takes it back). Returns how many."""
        now = utc_now()
        with self.engine.begin() as conn:
            killed = conn.execute(update(JOBS).where((JOBS.c.status == "running") & self._silent(now)).values(
                status="failed", message="interrupted (the process ended before it finished)", finished_at=now,
            )).rowcount  # fmt: skip
            unstarted = conn.execute(
                update(JOBS).where((JOBS.c.status == "queued") & (JOBS.c.created_at < now - never_started)).values(
                    status="failed", message="never started (its process did not begin)", finished_at=now,
                )
            ).rowcount  # fmt: skip
        return killed + unstarted

    @staticmethod
    def _silent(now):
        """Jobs with no heartbeat for DEAD_AFTER (none at all: a run on SQLite, whose file lock cannot drop)."""
        return JOBS.c.heartbeat_at.is_(None) | (JOBS.c.heartbeat_at < now - DEAD_AFTER)

    def alive_job(self) -> str | None:
        """A running job whose heartbeat is fresh (its run is alive, whatever the lock says), or None."""
        query = select(JOBS.c.id).where((JOBS.c.status == "running") & ~self._silent(utc_now()))
        with self.engine.connect() as conn:
            return conn.scalars(query.limit(1)).first()

    def start_job(self, job_id: str, message: str) -> None:
        """The job is running from now on."""
        self.update_job(job_id, status="running", started_at=utc_now(), message=message)

    def beat_job(self, job_id: str) -> None:
        """The job's run is alive (its lock keeper calls this every few seconds)."""
        self.update_job(job_id, heartbeat_at=utc_now())

    def finish_job(self, job_id: str, status: str, message: str, result: dict | None = None) -> None:
        """The job ended now: `status` done or failed, with its last message (and, when done, its result)."""
        values = {"progress": 1.0, "result": result} if status == "done" else {}
        self.update_job(job_id, status=status, message=message[:500], finished_at=utc_now(), **values)

    def update_job(self, job_id: str, **values: Any) -> None:
        """Set any of status, progress (0-1), message, result (a dict), started_at, finished_at."""
        if "result" in values and not isinstance(values["result"], str | None):
            values["result"] = json.dumps(values["result"])
        with self.engine.begin() as conn:
            conn.execute(update(JOBS).where(JOBS.c.id == job_id).values(**values))

    def job(self, job_id: str) -> dict[str, Any] | None:
        """A job as a JSON-ready dict, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(JOBS).where(JOBS.c.id == job_id)).first()
        if row is None:
            return None
        data = dict(row._mapping)
        for key in ("created_at", "started_at", "finished_at", "heartbeat_at"):
            data[key] = data[key].replace(tzinfo=UTC).isoformat() if data[key] else None
        data["result"] = json.loads(data["result"]) if data["result"] else None
        return data

    def last_learned_row(self) -> int:
        """The newest labelled row id that the last finished learning run had read (0 before any run)."""
        return self.last_learned()[0]

    def last_result(self) -> dict[str, Any]:
        """What the last finished learning run recorded (its job's result; {} before any run)."""
        stmt = (
            select(JOBS.c.result)
            .where(JOBS.c.status == "done", JOBS.c.result.is_not(None))
            .order_by(JOBS.c.finished_at.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            result = conn.scalar(stmt)
        return json.loads(result) if result else {}

    def last_learned(self) -> tuple[int, datetime | None]:
        """(the newest labelled row id the last finished learning run had read, when it read them: naive UTC,
        None before any run or for a run recorded without it)."""
        data = self.last_result()
        if not data:
            return 0, None
        read_at = data.get("read_at")
        return int(data.get("last_row_id", 0)), datetime.fromisoformat(read_at) if read_at else None
