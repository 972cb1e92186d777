"""`digitlab learn` and `digitlab models list | promote | rollback`: parse, call, print."""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

from digitlab.core.config import Settings, get_settings

#: Seconds a `digitlab learn` stopped by SIGTERM has to leave cleanly (Kubernetes and compose wait 10 s).
STOP_GRACE = 8


def _settings() -> Settings:
    """The settings, with the working data folder made as the API makes it (the embedded SQLite store
    lives there: on a fresh checkout `digitlab models list` finds an empty store, not an error)."""
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings


#: what a stopped run still records when its SystemExit did not end it in time (`stopped`): the job's failure
LAST_WORDS: list[Callable[[str], None]] = []


def stopped(signum, frame) -> None:
    """SIGTERM's handler (compose, Kubernetes and `docker stop` send it): leave through SystemExit, so the job
    says "stopped" (it stayed "running" at 0 %). Should leaving hang (a pool's thread, a lock), the process
    ends anyway STOP_GRACE s later, every thread's stack on stderr, before the sender's SIGKILL; 2 s before
    that, `LAST_WORDS` record the stop. (A SystemExit raised while Python runs a callback that cannot pass it
    on, such as logging's lock release right after a pool forked a worker, is printed and dropped: the run went
    on and was ended by the watchdog with its job still "running", 1 CI run in ~10.)"""
    message = f"stopped by signal {signum} before it finished"
    if not _STOPPING:  # (a signal sent again by `_one_line` only raises again: the clocks run from the first)
        _STOPPING.append(signum)
        sys.unraisablehook = _one_line  # what breaks while the run comes down (a pool's pipe: "Bad file descriptor")
        faulthandler.dump_traceback_later(STOP_GRACE, exit=True)
        threading.Thread(target=_last_words, args=(message, max(0.5, STOP_GRACE - 2)), daemon=True).start()
    raise SystemExit(message)


#: the signal whose stop is under way
_STOPPING: list[int] = []
#: seconds before a stop whose SystemExit was dropped is asked for again (out of the callback that dropped it)
RESEND_AFTER = 0.05


def _one_line(unraisable) -> None:
    """An error Python can only report ("Exception ignored in ..."), once the run is being stopped: one line,
    not a traceback under the stop's own line (a pool's worker pipe closed under it, session 30). When it is the
    stop's own SystemExit (raised in a callback that drops it: logging's after-fork lock release as a pool forks
    its workers), the signal is sent again: the run went on for the watchdog's 8 s, its "training" markers left
    behind (1 dry run in 2 once `train` touched them before its style drawings, session 32)."""
    exc = unraisable.exc_value
    print(f"Exception ignored while stopping: {type(exc).__name__}: {exc}", file=sys.stderr)
    if isinstance(exc, SystemExit) and _STOPPING:
        again = threading.Timer(RESEND_AFTER, os.kill, (os.getpid(), _STOPPING[0]))
        again.daemon = True
        again.start()


def _last_words(message: str, after: float) -> None:
    time.sleep(after)  # (a run that left as it should is gone by now: this thread with it)
    for record in LAST_WORDS:
        try:
            record(message)
        except Exception as exc:  # noqa: BLE001  (the database may be what hangs: the stacks follow anyway)
            print(f"could not record the stop: {exc}", file=sys.stderr)


def learn_command(args: argparse.Namespace) -> int:
    """Learn every model (or the named ones); 0 whether or not anything was promoted."""
    from digitlab.cli.db import absent_sqlite_file
    from digitlab.errors import DigitlabError
    from digitlab.models.registry import unknown_models
    from digitlab.training.learn import learn

    if (unknown := unknown_models(args.models or ())) is not None:  # before "no database": a typo is a typo
        raise DigitlabError(unknown, code="unknown_model")
    database = absent_sqlite_file(get_settings().sqlalchemy_url)
    if database:  # (a mistyped data folder: it made an empty database there and said "0 drawings labelled")
        print(f"nothing learned: there is no database at {database} yet, so no labelled drawings (check "
              "DIGITLAB_DATA_DIR or DATABASE_URL: the API's own)")  # fmt: skip
        return 0
    signal.signal(signal.SIGTERM, stopped)
    outcomes = learn(_settings(), models=args.models or None, min_new=args.min_new, job_id=args.job_id,
                     on_start=LAST_WORDS.append)  # fmt: skip
    for outcome in outcomes:
        print(outcome.line())
    return 0


def _versions():
    from digitlab.store.db import make_engine, upgrade
    from digitlab.store.versions import VersionStore

    engine = make_engine(_settings().sqlalchemy_url)
    upgrade(engine)
    return VersionStore(engine)


def _no_versions(name: str | None) -> str:
    """What is served when nothing was learned: the models' files, if there are any (`models list svm` said "the
    models' files are served" of an svm never trained: a tour, session 50)."""
    from digitlab.models.registry import MODEL_SPECS, manifest_path

    model_dir = get_settings().model_dir
    names = [name] if name else list(MODEL_SPECS)
    untrained = [n for n in names if manifest_path(n, model_dir) is None]
    if name is not None:
        if untrained:
            return f"no learned versions of {name}, and it is not trained: `digitlab train {name}` builds it"
        return f"no learned versions of {name} yet: its files are served (`digitlab learn` builds new versions)"
    served = "the models' files are served" + (f" ({', '.join(untrained)} not trained)" if untrained else "")
    return f"no learned versions yet: {served} (`digitlab learn` builds new versions)"


def models_command(args: argparse.Namespace) -> int:
    from digitlab.errors import DigitlabError
    from digitlab.models.registry import unknown_models

    if getattr(args, "name", None) is not None and (unknown := unknown_models([args.name])):  # not "no versions yet"
        raise DigitlabError(unknown, code="unknown_model")
    if args.action == "list":  # read-only: a mistyped data folder made an empty database there
        from digitlab.cli.db import absent_sqlite_file

        database = absent_sqlite_file(get_settings().sqlalchemy_url)
        if database:
            print(f"no learned versions: there is no database at {database} yet (check DIGITLAB_DATA_DIR or "
                  "DATABASE_URL if predictions were stored)")  # fmt: skip
            return 0
    versions = _versions()
    if args.action == "promote":
        served = versions.promoted().get(args.name, ("",))[0] == args.version
        before = versions.get(args.name, args.version)
        info = versions.promote(args.name, args.version)
        print(f"{info.name}: version {info.version} is served already" if served else
              f"{info.name}: version {info.version} promoted (every API process serves it within seconds)")  # fmt: skip
        if not served and before is not None and before.status == "rejected" and before.reason:
            print(f"note: it had been rejected ({before.reason}); `digitlab models rollback {info.name}` undoes this")
        return 0
    if args.action == "rollback":
        info = versions.rollback(args.name)
        print(f"{args.name}: rolled back to version {info.version}" if info else
              f"{args.name}: rolled back to the version of its files (no earlier promoted version to go back to; "
              f"`digitlab models promote {args.name} VERSION` serves any listed one)")  # fmt: skip
        return 0
    rows = versions.list(args.name)
    if not rows:
        print(_no_versions(args.name))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Learned model versions (newest first)")
    for column in ("model", "version", "parent", "status", "built", "users' drawings", "held-out users", "MNIST test", "reason"):
        table.add_column(column)
    for v in rows:
        m, d = v.manifest.get("metrics", {}), v.manifest.get("data", {})
        table.add_row(
            v.name, v.version, v.parent_version or "", v.status, v.created_at.strftime("%Y-%m-%d %H:%M"),
            str(d.get("train", "")),
            f"{m.get('parent_user_holdout_accuracy', 0):.1%} -> {m.get('user_holdout_accuracy', 0):.1%}",
            f"{m.get('mnist_test_accuracy', 0):.2%}", v.reason or "",
        )  # fmt: skip
    # piped, logged or in cron the console is 80 columns: nine squeezed columns, a reason one word per line
    Console(width=None if sys.stdout.isatty() else 240).print(table)
    return 0
