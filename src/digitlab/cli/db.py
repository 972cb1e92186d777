"""`digitlab db upgrade | export | prune`: maintenance without the API running (no spool involved)."""

from __future__ import annotations

import argparse
import os
import sys
from itertools import chain
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from digitlab.errors import DigitlabError
from digitlab.store import export
from digitlab.store.db import DatabaseUnavailableError, make_engine, upgrade
from digitlab.store.numbers import delete_numbers_older_than, labelled_digit_crops
from digitlab.store.repository import Repository
from digitlab.store.store import is_outage

#: `prune --days` at most (a hundred years; more overflows the date arithmetic)
MAX_DAYS = 36_500


def check_export_target(out: str, fmt: str) -> None:
    """Refuse, before any work, an `--out` the export would misuse: an existing device, folder or file of
    the wrong kind is never replaced (the export writes a temporary file and renames it over the target),
    and a typo in the folder is not silently created. `-` (csv only) is standard output."""
    if out == "-" and fmt == "csv":
        return
    if not out.strip() or out == "-":
        raise DigitlabError(f"--out must name a {'file' if fmt == 'csv' else 'folder'}", code="bad_path")
    path = Path(out)
    if fmt == "csv" and path.exists() and not path.is_file():
        raise DigitlabError(f"--out {out} exists and is not a regular file: choose a file name", code="bad_path")
    if fmt == "idx" and path.exists() and not path.is_dir():
        raise DigitlabError(f"--out {out} exists and is not a folder (idx writes two files into a folder)", code="bad_path")
    parent = path.absolute().parent
    if parent.exists() and not parent.is_dir():
        raise DigitlabError(f"--out {out}: {parent} is a file, not a folder", code="bad_path")
    if not parent.is_dir():
        raise DigitlabError(f"--out {out}: the folder {parent} does not exist", code="bad_path")


def _export_to_stdout(samples) -> int:
    """CSV to standard output: a reader that stops early (`| head`) ends the export quietly, like any
    Unix tool; a write that fails otherwise (a full disk) is one line."""
    try:
        n = export.write_csv(samples, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except OSError as exc:
        raise DigitlabError(f"could not write the export to standard output: {exc.strerror or exc}",
                            code="export_failed") from None  # fmt: skip
    print(f"exported {n} labelled drawings to standard output (csv)", file=sys.stderr)
    return 0


def db_command(args: argparse.Namespace, settings=None) -> int:
    if settings is None:
        from digitlab.core.config import get_settings

        settings = get_settings()
    if args.db_command == "prune" and not 1 <= args.days <= MAX_DAYS:
        raise DigitlabError(f"--days must be 1-{MAX_DAYS}", code="invalid_retention")
    if args.db_command == "export":
        check_export_target(args.out, args.format)
    url = settings.sqlalchemy_url
    engine = make_engine(url)
    shown = engine.url.render_as_string(hide_password=True)
    database = absent_sqlite_file(engine.url)
    if args.db_command != "upgrade" and database:
        engine.dispose()  # a mistyped data folder: a read-only command made an empty database and said "0"
        raise DigitlabError(f"there is no database at {database}: check DIGITLAB_DATA_DIR (or DATABASE_URL)",
                            code="no_database")  # fmt: skip
    try:
        if url.startswith("sqlite:///"):
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        revision = upgrade(engine)  # every command works on an up-to-date schema
        repo = Repository(engine)
        if args.db_command == "upgrade":
            print(f"database {shown} is at revision {revision} (head)")
        elif args.db_command == "export":
            samples = chain(repo.labelled_images(), labelled_digit_crops(engine))  # as the API's export
            if args.format == "csv" and args.out == "-":
                return _export_to_stdout(samples)
            try:
                n = (export.write_csv if args.format == "csv" else export.write_idx)(samples, args.out)
            except OSError as exc:  # it named the temporary file beside the target ("/proc/version.tmp")
                raise DigitlabError(f"could not write --out {args.out}: {exc.strerror or exc}",
                                    code="export_failed") from None  # fmt: skip
            print(f"exported {n} labelled drawings to {args.out} ({args.format})")
        elif args.db_command == "prune":
            predictions, numbers = repo.delete_older_than(args.days), delete_numbers_older_than(engine, args.days)
            days = f"{args.days:g} day{'' if args.days == 1 else 's'}"
            print(f"deleted {predictions} prediction{'' if predictions == 1 else 's'} and {numbers} read "
                  f"number{'' if numbers == 1 else 's'} older than {days}")  # fmt: skip
        return 0
    except SQLAlchemyError as exc:
        if is_outage(exc):
            reason = str(exc.orig if getattr(exc, "orig", None) else exc).strip().splitlines()[0]
            raise DatabaseUnavailableError(unreachable_line(shown, reason)) from exc
        raise
    finally:
        engine.dispose()


def absent_sqlite_file(url) -> str | None:
    """The SQLite file a URL (a string or SQLAlchemy's URL) names when it does not exist; None otherwise (another
    database, a file that is there, or a URL that cannot be parsed: the command that connects says why)."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(url)
    except ValueError:
        return None
    database = url.database if url.get_backend_name() == "sqlite" else None
    return database if database and not Path(database).exists() else None


def unreachable_line(url: str, reason: str) -> str:
    """What to check when the database at `url` (password hidden) cannot be reached or opened."""
    if url.startswith("sqlite"):  # a file: "is it running?" was no help for a read-only folder or a held lock
        if "locked" in reason:
            return f"the database {url} is locked by another process ({reason}): try again when it has finished"
        return (f"cannot open the database {url} ({reason}): check that DIGITLAB_DATA_DIR (or DATABASE_URL) names "
                "a folder this user can write")
    from digitlab.store.db import REFUSED_FOR_GOOD

    refused = REFUSED_FOR_GOOD.search(reason)
    if refused:  # it was reached ("is it running?" sent people to a server that was fine), as `serve` says
        return f"the database server at {url} refuses the connection ({refused[1]}): check DATABASE_URL (or POSTGRES_*)"
    if "lock timeout" in reason:  # another process holds it (migrating, say): it was "cannot reach the database"
        return (f"the database {url} is busy: another process holds a lock it needs ({reason}): try again when it "
                "has finished (another digitlab migrating it?)")
    return (f"cannot reach the database {url} ({reason}): check that it is running and that DATABASE_URL "
            "(or POSTGRES_*) points to it")
