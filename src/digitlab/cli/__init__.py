"""The `digitlab` command: one entry point, one subcommand per job; heavy imports happen lazily."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from digitlab.cli.train import train_command

    return train_command(
        args.models, limit=args.limit, jobs=args.jobs, calibrate_only=args.calibrate_only, out_dir=args.out
    )


def _evaluate(args: argparse.Namespace) -> int:
    from digitlab.errors import DigitlabError

    benchmark = args.drawn or args.real or args.numbers
    for option, given, needs in (("--count", args.count, benchmark), ("--seed", args.seed, benchmark),
                                 ("--part", args.part, args.numbers)):  # fmt: skip
        if given is not None and not needs:  # ignored before: the MNIST table, as if the option meant nothing
            where = "--numbers" if option == "--part" else "--drawn, --real or --numbers"
            raise DigitlabError(f"{option} goes with {where}", code="bad_arguments")
    args.seed = 0 if args.seed is None else args.seed
    args.part = args.part or "heldout"
    if not args.models:
        _say_if_only_the_bundled_cnn()
    if args.real:
        from digitlab.evaluation.real import evaluate_real_command

        return evaluate_real_command(args.models, as_json=args.json, count=args.count, seed=args.seed)
    if args.numbers:
        from digitlab.evaluation.numbers import evaluate_numbers_command

        return evaluate_numbers_command(
            args.models, as_json=args.json, count=2000 if args.count is None else args.count, seed=args.seed,
            part=args.part,
        )
    if args.drawn:
        from digitlab.evaluation.drawn import evaluate_drawn_command

        count = 2000 if args.count is None else args.count
        return evaluate_drawn_command(args.models, as_json=args.json, count=count, seed=args.seed)
    from digitlab.cli.evaluate import evaluate_command

    return evaluate_command(args.models, as_json=args.json)


def _say_if_only_the_bundled_cnn() -> None:
    """With no trained model in DIGITLAB_MODEL_DIR (a typo, a fresh machine), evaluate scored the CNN shipped
    in the package as if it were the lot, without a word."""
    from digitlab.core.config import get_settings
    from digitlab.models.registry import CLASSICAL_MODELS, manifest_path

    model_dir = get_settings().model_dir
    if not any(manifest_path(name, model_dir) for name in CLASSICAL_MODELS):
        print(f"note: no trained model in {model_dir} (DIGITLAB_MODEL_DIR): only the bundled CNN is scored; "
              "`digitlab train` builds the others", file=sys.stderr)  # fmt: skip


def _serve(args: argparse.Namespace) -> int:
    from digitlab.api.server import serve

    return serve(host=args.host, port=args.port, workers=args.workers)


def _ui(args: argparse.Namespace) -> int:
    from digitlab.ui.launch import run_ui

    return run_ui(host=args.host, port=args.port)


def _db(args: argparse.Namespace) -> int:
    from digitlab.cli.db import db_command

    return db_command(args)


def _learn(args: argparse.Namespace) -> int:
    from digitlab.cli.learn import learn_command

    return learn_command(args)


def _models(args: argparse.Namespace) -> int:
    from digitlab.cli.learn import models_command

    return models_command(args)


def _run(args: argparse.Namespace) -> int:
    from digitlab.runner import run_all

    return run_all(train_missing=not args.no_train)


def _integer(text: str) -> int:
    """An argparse type: a whole number in ASCII digits. Python's int() also reads "١" (Arabic-Indic), "1_0"
    and " 7 ": `db prune --days ١` deleted data older than one day."""
    if not re.fullmatch(r"[+-]?[0-9]{1,18}", text):
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number (digits 0-9)")
    return int(text)


def _at_least(low: int, high: int | None = None):
    """An argparse type: an integer >= `low` (and <= `high`); argparse prints the one-line usage error."""

    def parse(text: str) -> int:
        value = _integer(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:,}, got {value:,}")
        return value

    return parse


#: `evaluate --count` at most: 100,000 drawings take an hour or more here
MAX_COUNT = 100_000


def build_parser() -> argparse.ArgumentParser:
    from digitlab import __version__

    parser = argparse.ArgumentParser(prog="digitlab", description=__doc__)
    parser.add_argument("--version", action="version", version=f"digitlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train models on the 60k MNIST training set and save artefacts")
    p.add_argument(
        "models", nargs="*",
        help="model names, 'cnn', 'detector', 'segment_verifier' or 'line_reader' (default: every classical model)",
    )
    p.add_argument(
        "--limit", type=_at_least(100), default=None, help="train on the first N images only (quick runs; N >= 100)"
    )
    p.add_argument("--jobs", type=_at_least(1), default=None, help="parallel worker processes (default: cores)")
    p.add_argument(
        "--calibrate-only", action="store_true",
        help="with 'detector': new uncertainty thresholds for the current models, same weights",
    )
    p.add_argument(
        "--out", type=Path, default=None,
        help="with 'detector', 'segment_verifier' or 'line_reader': write it here (default: DIGITLAB_MODEL_DIR; the bundled "
        "ones: src/digitlab/models/bundled)",
    )
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="accuracy of saved models: MNIST test (default), --drawn, --real or --numbers")
    p.add_argument("models", nargs="*", help="model names (default: every saved model)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    mode = p.add_mutually_exclusive_group()  # one benchmark a run (`--drawn --real` ran --real only, silently)
    mode.add_argument("--drawn", action="store_true", help="evaluate on digits re-drawn as canvas strokes")
    mode.add_argument(
        "--real", action="store_true", help="evaluate on held-out real handwriting that is not MNIST (USPS, Semeion)"
    )
    mode.add_argument("--numbers", action="store_true", help="read written numbers of 2-6 real non-MNIST digits")
    p.add_argument(
        "--count", type=_at_least(1, MAX_COUNT), default=None,  # (a huge one: a traceback, or silence for ever)
        help="with --drawn / --numbers: how many drawings (2000); with --real: scans per set (all)",
    )
    p.add_argument("--seed", type=_at_least(0), default=None,  # (numpy's generators refuse a negative seed)
                   help="with --drawn / --real / --numbers: rendering seed (0 or more; default 0)")
    p.add_argument(
        "--part", choices=["heldout", "calibration"], default=None,
        help="with --numbers: the held-out digits (the benchmark, default) or the calibration ones (to tune on)",
    )
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("serve", help="start the prediction API (uvicorn)")
    p.add_argument("--host", default=None, help="address to listen on (DIGITLAB_HOST, 127.0.0.1)")
    p.add_argument("--port", type=_integer, default=None, help="port to listen on (DIGITLAB_PORT, 8000)")
    p.add_argument("--workers", type=_at_least(0, 64), default=None,
                   help="worker processes (DIGITLAB_WORKERS; 0: one per core, at most 4)")
    p.set_defaults(func=_serve)

    p = sub.add_parser("ui", help="start the Streamlit frontend")
    p.add_argument("--host", default=None, help="address to listen on (DIGITLAB_UI_HOST, 127.0.0.1)")
    p.add_argument("--port", type=_integer, default=None, help="port to listen on (DIGITLAB_UI_PORT, 8501)")
    p.set_defaults(func=_ui)

    p = sub.add_parser("db", help="database maintenance")
    dbsub = p.add_subparsers(dest="db_command", required=True)
    dbsub.add_parser("upgrade", help="apply migrations up to the newest")
    q = dbsub.add_parser("export", help="export labelled drawings as a dataset")
    q.add_argument("--format", choices=["csv", "idx"], default="csv", help="csv (default) or MNIST's idx files")
    q.add_argument("--out", required=True, help="csv: a file (or - for standard output); idx: a folder")
    q = dbsub.add_parser("prune", help="delete predictions and read numbers older than N days (retention)")
    q.add_argument("--days", type=_integer, required=True, help="delete what is older than N days (1-36500)")
    p.set_defaults(func=_db)

    p = sub.add_parser("learn", help="new model versions from the users' labelled drawings (promoted if not worse)")
    p.add_argument("models", nargs="*", help="model names (default: every trained model)")
    p.add_argument("--min-new", type=_at_least(0), default=0, metavar="N",
                   help="do nothing unless at least N drawings were labelled since the last run (for cron)")
    p.add_argument("--job-id", default=None, help=argparse.SUPPRESS)  # set by POST /api/v1/learn
    p.set_defaults(func=_learn)

    p = sub.add_parser("models", help="learned model versions: list, promote, roll back")
    msub = p.add_subparsers(dest="action", required=True)
    q = msub.add_parser("list", help="every learned version with its figures")
    q.add_argument("name", nargs="?", default=None, help="one model only (default: every model)")
    q = msub.add_parser("promote", help="serve this version from now on")
    q.add_argument("name", help="model name, e.g. svm")
    q.add_argument("version", help="a version number shown by `digitlab models list`")
    q = msub.add_parser("rollback", help="stop serving the promoted version; the previous one comes back")
    q.add_argument("name", help="model name, e.g. svm")
    p.set_defaults(func=_models)

    p = sub.add_parser(
        "run",
        help="train what is missing, then start API and UI together",
        description="Train the classical models that are missing (in the background: 5-9 minutes on a quiet 2-core "
        "machine, up to ~20 on a busy one; DIGITLAB_TRAIN_LIMIT=3000 trains quick, weaker ones in seconds; the CNN "
        "is bundled and answers at once), then start the API and the UI together; Ctrl-C stops both.",
        epilog="Ports and places come from the environment: DIGITLAB_PORT (API, default 8000), DIGITLAB_UI_PORT "
        "(UI, default 8501), DIGITLAB_MODEL_DIR, DIGITLAB_DATA_DIR, DATABASE_URL (default: SQLite in the data "
        "folder); `digitlab run` reads them as `serve` and `ui` do.",
    )
    p.add_argument("--no-train", action="store_true", help="start at once with whatever models exist (the CNN is bundled)")
    p.set_defaults(func=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # (a full disk or a closed pipe is found here, not in a traceback at exit)
        return code
    except KeyboardInterrupt:  # a job stopped with no word: was it stopped, or did it fail? (servers: their stop)
        if args.command in ("train", "learn", "evaluate", "db"):
            print(f"stopped by Ctrl-C: `digitlab {args.command}` did not finish", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped early (`| head`): quiet, like any Unix tool
        _stdout_to_devnull()
        return 0
    except Exception as exc:  # one line a person can act on, never a traceback
        from digitlab.errors import DigitlabError

        if isinstance(exc, DigitlabError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        message = _bad_settings(exc) or _database_unreachable(exc) or _not_our_database(exc) or _unusable(exc)
        if message:
            print(f"error: {message}", file=sys.stderr)
            return 2
        if isinstance(exc, OSError):  # the machine, not digitlab: a full disk (stdout on /dev/full), a lost file
            where = f" ({exc.filename})" if exc.filename else ""
            print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
            with contextlib.suppress(OSError):
                _stdout_to_devnull()
            return 1
        raise


def _stdout_to_devnull() -> None:
    """No second error when Python flushes a broken standard output at exit."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


SECRET_SETTINGS = ("admin_token",)  #: their values are never printed, even when refused


def _bad_settings(exc: Exception) -> str:
    """One line naming the environment variables that could not be read, and why; empty for any other error."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from digitlab.core.config import Settings

    if isinstance(exc, SettingsError):  # e.g. a list setting that is not JSON
        import re

        field = re.search(r'field "(\w+)"', str(exc))
        name = f"DIGITLAB_{field[1].upper()}" if field else "a setting"
        return f"{name} could not be read (a list is written as JSON, e.g. '[\"https://...\"]')"
    if not isinstance(exc, ValidationError) or exc.title != Settings.__name__:
        return ""
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        name = field if field.isupper() else f"DIGITLAB_{field.upper()}"
        shown = "'***'" if field in SECRET_SETTINGS else repr(error.get("input"))  # never a secret in a log
        problems.append(f"{name}={shown}{_where(name)}: {error['msg']}")
    return "bad setting " + "; ".join(problems)


def _where(name: str) -> str:
    """" (from .env)" when the value was not in the environment but in the `.env` file read beside it."""
    import os

    from dotenv import dotenv_values  # the parser pydantic-settings reads the file with

    from digitlab.core.config import Settings

    if name.upper() in {key.upper() for key in os.environ}:
        return ""
    defined = {key.upper() for key in dotenv_values(Settings.model_config["env_file"])}
    return " (from .env)" if name.upper() in defined else ""


def _unusable(exc: Exception) -> str:
    """One line for a database URL no driver can use, or a path that is a file where a folder is needed
    (or the reverse, or not writable); empty for any other error."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    if isinstance(exc, ArgumentError | NoSuchModuleError | ModuleNotFoundError):
        from digitlab.api.server import unusable_database_url

        return unusable_database_url(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename} ({_path_setting(exc.filename)})"
    return ""


def _path_setting(filename: object) -> str:
    """Which setting names the folder `filename` is in ("check DIGITLAB_DATA_DIR"), else the general hint."""
    general = "check the path settings and --out"
    try:
        from digitlab.core.config import get_settings

        settings = get_settings()
        path = Path(os.fsdecode(filename)).absolute()  # type: ignore[arg-type]
        folders = [("DIGITLAB_SPOOL_DIR", settings.spool_dir), ("DIGITLAB_MNIST_DIR", settings.mnist_path),
                   ("DIGITLAB_HANDWRITING_DIR", settings.handwriting_path), ("DIGITLAB_MODEL_DIR", settings.model_dir),
                   ("DIGITLAB_DATA_DIR", settings.data_dir)]  # fmt: skip
        for name, folder in folders:  # the most specific first: the spool and MNIST are in the data folder
            if folder is not None and path.is_relative_to(Path(folder).absolute()):
                return f"check {name}"
    except Exception:  # noqa: BLE001 -- settings that cannot be read: the general hint
        return general
    return general


def _database_url() -> str:
    try:
        from sqlalchemy.engine import make_url

        from digitlab.core.config import get_settings

        return make_url(get_settings().sqlalchemy_url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 -- the message is still useful without the address
        return "the configured database"


def _not_our_database(exc: Exception) -> str:
    """One line for a database that answers but cannot be used: a file that is not a SQLite database, or
    one migrated by a newer digitlab (a revision this one does not know); empty for any other error."""
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import DatabaseError

    if isinstance(exc, CommandError) and "locate revision" in str(exc):
        from digitlab.store.db import head_revision

        return (f"the database {_database_url()} was migrated by a newer digitlab ({str(exc).strip()}; this one "
                f"knows up to {head_revision()}): run the newer digitlab, or restore the database from a backup")
    if isinstance(exc, DatabaseError):
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
        url = _database_url()
        if url.startswith("sqlite"):
            return (f"the database {url} cannot be used ({reason}): is DATABASE_URL (or DIGITLAB_DATA_DIR) the "
                    "right one, and the file a digitlab database?")
        return (f"the database {url} cannot be used ({reason}): check DATABASE_URL (or POSTGRES_*) and that its "
                "user may create tables there")
    return ""


def _database_unreachable(exc: Exception) -> str:
    """The one-line message for a database that cannot be reached (down, wrong address or credentials);
    empty for any other error."""
    from sqlalchemy.exc import OperationalError

    if not isinstance(exc, OperationalError):
        return ""
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
    from digitlab.cli.db import unreachable_line

    return unreachable_line(_database_url(), reason)



if __name__ == "__main__":
    sys.exit(main())
