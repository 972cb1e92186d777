"""`digitlab learn`: a new version of every model from its base data plus the users' labelled drawings,
promoted only when it reads the held-out users' drawings at least as well as the served version and
loses at most MNIST_LOSS_ALLOWED on MNIST test (docs/learning.md).

Runs in its own process (the CLI, a compose `trainer` service, a Kubernetes CronJob, or started by
`POST /api/v1/learn`), never inside an API worker. One run at a time per deployment (a database lock);
a run killed half-way has written nothing but finished versions: each version is one transaction, and
the API only ever loads promoted, hash-checked versions.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from digitlab.core.config import Settings
from digitlab.errors import DigitlabError
from digitlab.evaluation.heldout import HeldOut, heldout_metrics, load_heldout
from digitlab.models.artifacts import sha256_bytes
from digitlab.models.registry import (
    CLASSICAL_MODELS,
    MODEL_SPECS,
    LoadedModel,
    load_model,
    manifest_path,
    model_from_payload,
    unknown_models,
)
from digitlab.store.db import BusyError, HeldLock, exclusive, make_engine, upgrade
from digitlab.store.numbers import labelled_number_digits
from digitlab.store.records import utc_now
from digitlab.store.repository import Repository
from digitlab.store.versions import VersionStore
from digitlab.training.gate import Outcome, gate, real_scores
from digitlab.training.progress import listening, log
from digitlab.training.user_data import UserData, counted, disputed_sessions, prepare

#: a user's drawing weighs as much as this many MNIST digits (7,500 drawings vs 60,000 MNIST: ~1/3 of the
#: weight), enough to learn styles MNIST lacks without forgetting MNIST (measured: docs/learning.md)
USER_WEIGHT = 4.0
MIN_HOLDOUT = 20  #: fewer held-out drawings than this cannot judge a model
#: digits of the CNN's own training data (MNIST, style drawings, real handwriting) mixed into its fine-tuning,
#: so it does not forget what it knew
CNN_BASE_MIX = 20_000
ORDER = ["cnn", "svm", "svm_pca", "extra_trees", "random_forest"]
#: a step quiet for this long (an SVM's fit: minutes) has its job's message say how long it has taken so far
TICK_SECONDS = 10.0
#: ...and the command line says it once a minute (a terminal sat silent for three minutes during the classical fits)
SAY_SECONDS = 60.0


def served_models(settings: Settings, versions: VersionStore, problems: dict[str, str] | None = None) -> dict[str, LoadedModel]:
    """What the API serves now: the promoted learned version of each model, else its files. `problems` gets why
    a model that is there cannot be loaded (a damaged manifest was "not trained: run `digitlab train`")."""
    out: dict[str, LoadedModel] = {}
    promoted = versions.promoted()
    for name in MODEL_SPECS:
        try:
            if name in promoted:
                out[name] = model_from_payload(name, *versions.load(name, promoted[name][0]))
            else:
                out[name] = load_model(name, settings.model_dir)
        except DigitlabError as exc:  # not trained, or not loadable: nothing to learn from
            if problems is not None and (name in promoted or manifest_path(name, settings.model_dir) is not None):
                problems[name] = str(exc).rstrip(".")
    return out


def _accuracy(model: LoadedModel, x: np.ndarray, y: np.ndarray) -> float:
    proba = model.predict_proba(x.reshape(len(x), 784).astype(np.float32) / 255.0)
    return float((proba.argmax(axis=1) == y).mean())


def _mnist_test(settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    from digitlab.data import load_mnist

    return load_mnist("test", directory=settings.mnist_dir)


def _real_handwriting(settings: Settings, say) -> tuple[np.ndarray, np.ndarray] | None:
    """The real calibration handwriting (all views) as (float (n, 784), labels), or None without the sets."""
    from digitlab.training.real_calibration import real_calibration_data

    try:
        parts = real_calibration_data(settings.handwriting_path, cache_dir=settings.data_dir / "cache")
    except Exception as exc:  # noqa: BLE001 - a missing or damaged set: the other two bars still hold
        parts, reason = None, str(exc)
    else:
        reason = f"no real handwriting in {settings.handwriting_path}"
    if not parts:
        say(f"not judged on real handwriting ({reason}): only the users' hold-out and MNIST test bars apply")
        return None
    return np.concatenate([p[0] for p in parts.values()]), np.concatenate([p[1] for p in parts.values()])


def learn(
    settings: Settings,
    *,
    models: list[str] | None = None,
    min_new: int = 0,
    job_id: str | None = None,
    limit: int | None = None,
    say: Callable[[str], None] = log,
    on_start: Callable[[Callable[[str], None]], None] | None = None,
) -> list[Outcome]:
    """One learning run; returns what became of each model. Raises BusyError while another run goes on.
    `on_start` is handed a function that marks this run's job failed with a message while it still runs."""
    models = list(dict.fromkeys(models)) if models else None  # a name given twice was trained twice, in parallel
    if (unknown := unknown_models(models or ())) is not None:  # before the lock: a typo while a run goes on
        raise DigitlabError(unknown)  # said "another digitlab learn is running"
    engine = make_engine(settings.sqlalchemy_url)
    try:
        upgrade(engine)
        versions = VersionStore(engine)
        if job_id is not None and (versions.job(job_id) or {}).get("status") != "queued":  # (the hidden option's
            raise DigitlabError(  # id of a finished job had its outcome rewritten by a new run)
                f"learning job {job_id} is not waiting to start: it is unknown, running or finished", code="bad_arguments"
            )
        try:
            with exclusive(engine, "digitlab learn", keep=True, wait=True) as lock:
                versions.fail_interrupted_jobs()
                run = _Run(settings, versions, Repository(engine), job_id or versions.create_job(), say, limit, lock)
                if on_start is not None:
                    on_start(run.fail_if_running)
                return run.tracked(models or ORDER, min_new)
        except BusyError as exc:
            if job_id:  # started by the API: its job says why it did nothing
                versions.finish_job(job_id, "failed", str(exc))
                raise
            raise BusyError(_naming_the_run(versions, str(exc))) from None
    finally:
        engine.dispose()


def _naming_the_run(versions: VersionStore, refusal: str) -> str:
    """The refusal with the run going on: its job, how far it is, its step (a second `learn` said only "another
    digitlab learn is running", and where to look was left to the operator)."""
    running = versions.busy_job()
    job = versions.job(running) if running else None
    if job is None:  # (a run started before its job row, or a lock held by hand)
        return refusal
    step = f": {job['message']}" if job.get("message") else ""
    return (f"{refusal.rstrip('.')} (job {running}, {job['status']}, {job['progress']:.0%} done{step}; "
            f"GET /api/v1/learn/{running} follows it).")  # fmt: skip


class _Run:
    """One learning run: read and clean the drawings, build each candidate, judge it, store it."""

    def __init__(self, settings: Settings, versions: VersionStore, repo: Repository, job_id: str, say, limit,
                 lock: HeldLock):  # fmt: skip
        self.settings, self.versions, self.repo, self.job_id, self.say = settings, versions, repo, job_id, say
        self.limit = limit  # first N MNIST training images only (tests, quick trials)
        self.step, self.steps = 0, 1
        self.promoted_at_start: dict = {}  # {name: (version, sha256)} when the run began (`_judge`)
        self.real: tuple[np.ndarray, np.ndarray] | None = None  # the third bar's images (`_real_handwriting`)
        self.heldout: HeldOut | None = None  # measured, never judged on: the Models page's real handwriting figure
        self.last_line: tuple[str, float] = ("", time.monotonic())  # the job's message and when it was said
        self.learned: dict[str, str] = {}  # {model: SHA-256 served once it learned every labelled drawing}
        self.lock = lock  # the learning lock this run holds (`check` before each step and each version stored)
        lock.beat = lambda: versions.beat_job(job_id)  # alive, whatever the lock's connection went through
        if lock.keeping:  # (PostgreSQL; SQLite's file lock cannot drop: a free lock there is a dead run)
            versions.beat_job(job_id)

    def fail_if_running(self, message: str) -> None:
        job = self.versions.job(self.job_id)
        if job is not None and job["status"] == "running":
            self.versions.finish_job(self.job_id, "failed", message)

    def tracked(self, names: list[str], min_new: int) -> list[Outcome]:
        """`all`, with the job's status kept up to date (failed, with the reason, if anything raises)."""
        self.versions.start_job(self.job_id, "reading the labelled drawings")
        try:
            outcomes, result = self.all(names, min_new)
        except BaseException as exc:  # (Ctrl-C's KeyboardInterrupt says nothing: the job's message was empty)
            why = str(exc) or ("stopped by Ctrl-C before it finished" if isinstance(exc, KeyboardInterrupt) else
                               type(exc).__name__)  # fmt: skip
            self.versions.finish_job(self.job_id, "failed", why)
            raise
        self.versions.finish_job(self.job_id, "done", result["message"], result)
        return outcomes

    def _relay(self, line: str) -> None:
        """A line the training logged: a finished model or epoch is a step; the job's message follows."""
        if line.startswith("still at: "):  # the ticker's own line (said on the terminal), not a step
            return
        if "done)" in line or "fine-tuning epoch" in line or line.startswith("features for"):
            self.step += 1
        self.last_line = (line.strip(), time.monotonic())
        self.versions.update_job(self.job_id, progress=round(min(self.step, self.steps - 1) / self.steps, 3),
                                 message=line.strip())  # fmt: skip

    @contextlib.contextmanager
    def _ticking(self):
        """While the training says nothing (one model's fit: the bar sat at 40 % for two minutes, as if stuck), the
        job's message says how long the step has taken so far."""
        stop = threading.Event()
        said: dict[float, int] = {}  # {a quiet step's start: how many times the command line said so}

        def tick() -> None:
            while not stop.wait(TICK_SECONDS):
                line, since = self.last_line
                quiet = time.monotonic() - since
                if line and quiet >= TICK_SECONDS:
                    with contextlib.suppress(Exception):  # (a database away for a moment: the next tick)
                        self.versions.update_job(self.job_id, message=f"{line} ({_minutes(quiet)} so far)")
                if line and quiet >= SAY_SECONDS * (said.get(since, 0) + 1):
                    said[since] = said.get(since, 0) + 1
                    self.say(f"still at: {line} ({_minutes(quiet)} so far)")

        thread = threading.Thread(target=tick, name="learn-ticker", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def progress(self, message: str) -> None:
        self.lock.check()  # between steps: a run that lost its lock stops early
        self.say(message)
        self.last_line = (message, time.monotonic())
        self.versions.update_job(self.job_id, progress=round(self.step / self.steps, 3), message=message)

    def all(self, names: list[str], min_new: int) -> tuple[list[Outcome], dict]:
        if (unknown := unknown_models(names)) is not None:
            raise DigitlabError(unknown)
        last_id, since = self.versions.last_learned()
        read_at = utc_now()  # (before the read: a label given while it reads counts for the next run)
        new = self.repo.labelled_after(last_id, since)
        # {model: SHA-256 of the version served after it learned}: with nothing labelled since, a model still
        # served as then has learned every labelled drawing (a run rebuilt and promoted an identical version)
        self.learned = dict(self.versions.last_result().get("learned", {})) if new == 0 else {}
        if new < min_new:
            message = f"{counted(new, 'drawing')} labelled since the last run, fewer than --min-new {min_new}: nothing done"
            self.say(message)
            return [], {"message": message, "new_labelled": new, "last_row_id": last_id, "models": [],
                        "read_at": since and since.isoformat(), "learned": self.learned}  # (new stays new)
        problems: dict[str, str] = {}
        parents = served_models(self.settings, self.versions, problems)
        self.promoted_at_start = self.versions.promoted()
        untrained = [Outcome(n, "skipped", reason=f"cannot be loaded ({problems[n]})" if n in problems else
                             "not trained: run `digitlab train` first") for n in names if n not in parents]  # fmt: skip
        if names and len(untrained) == len(names):  # said before any data is read (it came after minutes of it)
            missing = [o.model for o in untrained if o.model not in problems]
            said = [f"{n} cannot be loaded ({problems[n]})" for n in names if n in problems]
            if missing:
                are = "is" if len(missing) == 1 else "are"
                said.append(f"{', '.join(missing)} {are} not trained: run `digitlab train {' '.join(missing)}` first")
            message = "; ".join(said) + "; nothing learned"
            self.say(message)
            return (untrained, {"message": message, "new_labelled": new, "last_row_id": last_id, "models": [],
                     "read_at": since and since.isoformat(), "learned": self.learned})  # fmt: skip
        current = [n for n in names if n in parents and self.learned.get(n) == parents[n].manifest.get("sha256")]
        skipped = untrained + [Outcome(n, "skipped", reason="already learned from every labelled drawing (nothing labelled "
                              "since the last run)") for n in current]  # fmt: skip
        if current and len(skipped) == len(names):
            message = (f"no drawing labelled since the last run: the served {', '.join(current)} already learned from "
                       "every labelled drawing; nothing built")  # fmt: skip
            self.say(message)
            return (skipped, {"message": message, "new_labelled": 0, "last_row_id": last_id,
                     "models": [o.__dict__ for o in skipped], "read_at": since and since.isoformat(),
                     "learned": self.learned})  # fmt: skip
        rows = list(self.repo.labelled_drawings())
        # and the digits of confirmed numbers (their crops' labels are known: a number read with as many digits as
        # were written), by the same rules; only drawings count as new for `--min-new` and the watermark
        data = prepare(rows + list(labelled_number_digits(self.repo.engine)))
        for note in data.notes:
            self.say(note)
        # what the run said of its data, kept in its result: a run started by "Learn now" writes its lines nowhere,
        # and "session 'poisoner' (held out): ... a mistake or a poisoning?" reached nobody (a tour, session 50)
        base = {"data": data.counts, "new_labelled": new, "last_row_id": max((r[0] for r in rows), default=last_id),
                "read_at": read_at.isoformat(), "notes": list(data.notes)}  # fmt: skip
        refusal = self._refusal(data)
        if refusal:
            self.say(refusal)  # (the drawings it refused count as new for `--min-new` next time)
            return [], {**base, "last_row_id": last_id, "read_at": since and since.isoformat(), "message": refusal,
                        "models": [], "learned": self.learned}  # fmt: skip
        reader = parents.get("cnn") or next(iter(parents.values()))  # the default model, else any served one
        for line in disputed_sessions(data, lambda x: reader.predict_proba(
                x.reshape(len(x), 784).astype(np.float32) / 255.0).argmax(axis=1)):  # fmt: skip
            self.say(line)
            base["notes"].append(line)
        learned, held = counted(len(data.train_y), "drawing"), counted(len(data.holdout_y), "held-out drawing")
        self.say(f"learning from users' {learned}, judged on {held} of "
                 f"{counted(data.counts['holdout_sessions'], 'other session')}")  # fmt: skip
        self.progress("reading the real handwriting (USPS, Semeion) a new version must not read worse (a minute "
                      "or two the first time, cached after)")  # fmt: skip
        with self._ticking():  # (74 s the first time with no word: no "so far", no "still at", the bar at 0 %)
            self.real = _real_handwriting(self.settings, self.say)
            if self.real is not None:  # (quick runs, `limit`: 100 scans a set)
                self.heldout = load_heldout(self.settings.handwriting_path, self.settings.data_dir / "cache",
                                            count=100 if self.limit else None)  # fmt: skip
        self.step += 1  # (minutes the first time: the bar moved only once a model was trained)
        outcomes = list(skipped)
        todo = [n for n in names if n in parents and n not in current]
        from digitlab.training.cnn_net import has_torch

        if "cnn" in todo and not has_torch():
            todo.remove("cnn")
            outcomes.append(Outcome("cnn", "skipped", reason="fine-tuning needs PyTorch: pip install -e '.[cnn]'"))
        from digitlab.training.cnn_finetune import EPOCHS

        # a step for the real handwriting, for the classical models' features, per model judged, per classical
        # model trained and per fine-tuning epoch (`_relay`)
        classical = sum(n in CLASSICAL_MODELS for n in todo)
        self.steps = 2 + len(todo) + classical + (classical > 0) + (EPOCHS if "cnn" in todo else 0)
        with listening(self._relay), self._ticking():
            built = self._build(todo, parents, data)
        x_test, y_test = self._mnist("test")
        for name in todo:
            # (the CNN's judging took 76 s under "cnn: fine-tuning epoch 2/2 ...", said once and never "so far")
            self.progress(f"judging {name}: the new version and the served one on the held-out users' drawings, "
                          "MNIST test" + (" and the real handwriting" if self.real is not None else ""))  # fmt: skip
            with self._ticking():
                outcome = self._judge(name, parents[name], *built[name], data, x_test, y_test)
            self.step += 1
            outcomes.append(outcome)
            self.progress(outcome.line())
        promoted = [o.model for o in outcomes if o.status == "promoted"]
        rejected = [o.model for o in outcomes if o.status == "rejected"]
        message = f"promoted: {', '.join(promoted) or 'none'}; rejected: {', '.join(rejected) or 'none'}"
        # a model left out says why (Learn now said "promoted: svm, ...; rejected: none" without a word that the
        # default model, the CNN, was not learned: PyTorch is not installed)
        # (models left out for the same reason named together: "svm not learned: not trained: run `digitlab train`
        # first; svm_pca not learned: not trained: ..." three times over under "Learning finished", a tour)
        left_out: dict[str, list[str]] = {}
        for o in outcomes:
            if o.status == "skipped":
                left_out.setdefault(str(o.reason), []).append(o.model)
        message += "".join(f"; {', '.join(models)} not learned: {why}" for why, models in left_out.items())
        return outcomes, {**base, "message": message, "models": [o.__dict__ for o in outcomes],
                          "learned": self.learned}  # fmt: skip

    @staticmethod
    def _refusal(data: UserData) -> str:
        if data.empty:
            if data.counts.get("rows"):  # there were some, and every one was left out
                return f"none of the {data.counts['rows']} labelled drawings can be learned from ({'; '.join(data.notes)}): nothing to learn"
            return "no labelled drawings in the store: nothing to learn (label drawings on the Draw page first)"
        sessions, held = data.counts["sessions"], data.counts["holdout_sessions"]
        if sessions < 2 or len(data.holdout_y) < MIN_HOLDOUT:  # (one session held out whole: a refit that learned
            total = len(data.train_y) + len(data.holdout_y)  # nothing from anyone, 10 minutes of it; session 30)
            if sessions < 2:
                why = (f"{'the only labelled drawing comes' if total == 1 else f'all {total:,} labelled drawings come'} from one "
                       "browser session, and a new model is judged on at least "
                       f"{MIN_HOLDOUT} drawings by other people than those it learns from")  # fmt: skip
            else:
                # ("only 1 drawing of 1 other browser session can be set aside", beside 17 labelled drawings of
                # about 10 sessions: other than what? a newcomer's tour, session 31)
                rows = data.counts.get("rows", total)  # History counts answers ("Labelled 24"): say why 13 here
                pictures = (f" ({rows:,} labelled answers: a picture answered for several models, or twice, counts "
                            "once)") if rows > total else ""  # (a tour, session 45)
                why = (f"a new model is judged on at least {MIN_HOLDOUT} drawings by other people than those it "
                       f"learns from (whole browser sessions set aside); of the {counted(total, 'labelled drawing')}"
                       f"{pictures} from {counted(sessions, 'browser session')}, the {counted(held, 'session')} set aside "
                       f"{'holds' if held == 1 else 'hold'} only {counted(len(data.holdout_y), 'drawing')}")  # fmt: skip
            return (f"{why}. When more people (browsers) have drawn and answered \"What did you draw?\", try "
                    "again. Nothing was built or promoted.")  # fmt: skip
        return ""

    def _mnist(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        from digitlab.data import load_mnist

        return load_mnist(split, directory=self.settings.mnist_dir, limit=self.limit if split == "train" else None)

    def _build(self, names: list[str], parents: dict[str, LoadedModel], data: UserData) -> dict[str, tuple[dict, bytes]]:
        from digitlab.models.artifacts import read_verified
        from digitlab.training.classical import train_models
        from digitlab.training.coverage import REAL_VARIANTS, coverage_set

        built: dict[str, tuple[dict, bytes]] = {}
        classical = [n for n in names if n in CLASSICAL_MODELS]
        # the base data is what `digitlab train` uses: MNIST + style drawings + real handwriting (+ its
        # distorted copies for the classical models)
        if classical:
            self.progress(f"refitting {', '.join(classical)} on MNIST + the users' drawings")
            base_x, base_y, summary = coverage_set(self.settings, limit=self.limit, real_variants=REAL_VARIANTS)
            images = np.concatenate([base_x.reshape(-1, 28, 28), data.train_x])
            labels = np.concatenate([base_y.astype(np.int64), data.train_y])
            weights = np.concatenate([np.ones(len(base_y)), np.full(len(data.train_y), USER_WEIGHT)])
            with tempfile.TemporaryDirectory(prefix="digitlab-learn-") as tmp:
                train_models(classical, Path(tmp), mnist_dir=self.settings.mnist_dir, limit=self.limit,
                             extra=(images, labels), extra_weight=weights,
                             extra_summary={**summary, "users_drawings": len(data.train_y)})  # fmt: skip
                built.update({name: read_verified(Path(tmp), name) for name in classical})
        if "cnn" in names:
            self.progress("fine-tuning the CNN on the users' drawings mixed with its own training data")
            built["cnn"] = self._build_cnn(parents["cnn"], data, coverage_set(self.settings, limit=self.limit)[:2])
        return built

    def _build_cnn(self, parent: LoadedModel, data: UserData, coverage: tuple[np.ndarray, np.ndarray]) -> tuple[dict, bytes]:
        from digitlab.models.onnx import OnnxClassifier
        from digitlab.training.cnn_finetune import finetune

        images, labels = self._mnist("train")
        pool_x = np.concatenate([images.reshape(-1, 28, 28), coverage[0].reshape(-1, 28, 28)])
        pool_y = np.concatenate([labels.astype(np.int64), coverage[1].astype(np.int64)])
        pick = np.random.default_rng(0).choice(len(pool_y), size=min(CNN_BASE_MIX, len(pool_y)), replace=False)
        started = time.perf_counter()
        payload = _payload_of(self.settings, self.versions, "cnn")
        candidates = finetune(payload, (data.train_x, data.train_y), (pool_x[pick], pool_y[pick]), weight=int(USER_WEIGHT))
        # one candidate goes to the gate: the mix that reads the held-out users best (ties: the gentler one)
        x_users = data.holdout_x.reshape(-1, 784).astype(np.float32) / 255.0
        on_users = {share: float((OnnxClassifier(new).predict_proba(x_users).argmax(axis=1) == data.holdout_y).mean())
                    for share, new in candidates.items()}  # fmt: skip
        share = max(sorted(on_users), key=lambda s: on_users[s])
        new = candidates[share]
        x_test, y_test = self._mnist("test")
        proba = OnnxClassifier(new).predict_proba(x_test.reshape(-1, 784).astype(np.float32) / 255.0)
        manifest = {
            **{k: v for k, v in parent.manifest.items() if not k.startswith("_")},
            "training_seconds": round(time.perf_counter() - started, 1),
            # what the network has learned from in all (the Models page called a fine-tuned CNN "a quick model"
            # for the 20,350 images of its fine-tuning; a probe, session 27), and its fine-tuning's own images
            "train_samples": int(parent.manifest.get("train_samples") or len(pick)) + len(data.train_y),
            "finetune_samples": int(len(pick) + len(data.train_y)),
            "finetuning": {"finetuned_share": share,
                           "user_holdout_accuracy_by_share": {str(k): round(v, 5) for k, v in on_users.items()}},
            "metrics": {"mnist_test_accuracy": round(float((proba.argmax(axis=1) == y_test).mean()), 5)},
        }
        return manifest, new

    def _judge(self, name: str, parent: LoadedModel, manifest: dict, payload: bytes, data: UserData,
               x_test: np.ndarray, y_test: np.ndarray) -> Outcome:  # fmt: skip
        """Measure the candidate beside the served version, apply the gate, store the version."""
        candidate = model_from_payload(name, manifest, payload)
        metrics = {
            "mnist_test_accuracy": float(manifest["metrics"]["mnist_test_accuracy"]),
            "user_holdout_accuracy": _accuracy(candidate, data.holdout_x, data.holdout_y),
            "parent_mnist_test_accuracy": _accuracy(parent, x_test, y_test),
            "parent_user_holdout_accuracy": _accuracy(parent, data.holdout_x, data.holdout_y),
        }
        if self.real is not None:
            new_real, new_digits = real_scores(candidate, *self.real)
            old_real, old_digits = real_scores(parent, *self.real)
            metrics.update(real_accuracy=new_real, parent_real_accuracy=old_real,
                           real_worst_digit_loss=float(max(0.0, (old_digits - new_digits).max())))  # fmt: skip
        if self.heldout is not None:
            metrics.update(heldout_metrics(candidate.predict_proba(self.heldout.X), self.heldout))
        self.lock.check()  # another run took over while the database was away: store nothing
        reason = gate(metrics)
        if not reason and self.versions.promoted().get(name) != self.promoted_at_start.get(name):
            reason = ("the served version changed while this one was built (a promotion or a rollback): not "
                      f"promoted over that decision (`digitlab models promote {name} VERSION` serves it)")  # fmt: skip
        version = self.versions.next_version(name)
        full = {
            **manifest, "name": name, "version": version, "parent_version": str(parent.version),
            "trained_at": datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
            "data": {**data.counts, "user_weight": USER_WEIGHT},
            "metrics": {**manifest.get("metrics", {}), **{k: round(v, 5) for k, v in metrics.items()}},
        }  # fmt: skip
        status = "rejected" if reason else "promoted"
        self.versions.add(name, version, payload, full, status=status, parent=str(parent.version), reason=reason or None)
        if status == "promoted" or not reason.startswith("the served version changed"):
            self.learned[name] = sha256_bytes(payload) if status == "promoted" else parent.manifest.get("sha256")
        else:  # an operator's choice is served: it did not learn these drawings
            self.learned.pop(name, None)
        return Outcome(name, status, version, str(parent.version), reason, full["metrics"])


def _minutes(seconds: float) -> str:
    """ "40 s", "2 min 05 s": how long a step has taken, for people watching a bar."""
    whole = int(seconds)
    return f"{whole} s" if whole < 60 else f"{whole // 60} min {whole % 60:02d} s"


def _payload_of(settings: Settings, versions: VersionStore, name: str) -> bytes:
    """The artefact bytes the API serves for `name` now."""
    from digitlab.models.artifacts import read_verified

    promoted = versions.promoted()
    if name in promoted:
        return versions.load(name, promoted[name][0])[1]
    return read_verified(manifest_path(name, settings.model_dir).parent, name)[1]
