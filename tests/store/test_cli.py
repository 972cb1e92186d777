"""`digitlab db upgrade | export | prune` through the real command line entry point, and `from_settings`."""

from __future__ import annotations

import base64
import os
import socket
import stat
from datetime import UTC, datetime, timedelta

import pytest

from digitlab.cli import main
from digitlab.core.config import Settings, get_settings
from digitlab.store import from_settings
from digitlab.store.db import head_revision, make_engine
from digitlab.store.export import read_idx


def _one_line_error(capsys, argv: list[str], code: int = 2) -> str:
    """Run `digitlab ARGV` with the settings read afresh; it exits `code` with one line on stderr: that line."""
    get_settings.cache_clear()
    try:
        assert main(argv) == code
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture
def use_database(monkeypatch, tmp_path):
    """Point the process settings (DATABASE_URL) at a test database."""

    def use(url: str) -> None:
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setenv("DIGITLAB_DATA_DIR", str(tmp_path / "data"))
        get_settings.cache_clear()

    yield use
    get_settings.cache_clear()


def test_db_upgrade(use_database, empty_url, capsys):
    use_database(empty_url)
    assert main(["db", "upgrade"]) == 0
    assert f"at revision {head_revision()}" in capsys.readouterr().out
    engine = make_engine(empty_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM user_predictions").scalar() == 0
    finally:
        engine.dispose()


def test_db_export_and_prune(use_database, store, make_record, make_png, tmp_path, capsys):
    use_database(store.url)
    now = datetime.now(UTC)
    for i in range(3):
        store.add(make_record(i, drawn=i, processed_png=make_png(i), timestamp=now - timedelta(days=100 * i)))
    store.add(make_record(5))  # unlabelled

    assert main(["db", "export", "--out", str(tmp_path / "d.csv")]) == 0
    assert "exported 3 labelled drawings" in capsys.readouterr().out
    assert len((tmp_path / "d.csv").read_text().splitlines()) == 4
    assert main(["db", "export", "--format", "idx", "--out", str(tmp_path / "idx")]) == 0
    assert read_idx(tmp_path / "idx")[1].tolist() == [0, 1, 2]

    from digitlab.store.numbers import NumberRecord, insert_number, list_numbers

    for age in (1, 200):  # a read number keeps its image: retention must take it too (it was kept for good)
        insert_number(store.engine, NumberRecord(model_name="cnn", text="42", confidence=0.9, uncertain=False,
                                                 digits=[], image_png=b"png", timestamp=now - timedelta(days=age)))  # fmt: skip
    assert main(["db", "prune", "--days", "30"]) == 0
    assert "deleted 2 predictions and 1 read number older than 30 days" in capsys.readouterr().out
    assert store.count() == 2 and list_numbers(store.engine)[1] == 1
    assert main(["db", "prune", "--days", "0"]) == 2


def test_an_unreachable_database_is_one_line_error(use_database, absent_db, capsys, backend):
    use_database(absent_db[0])
    assert main(["db", "upgrade"]) == 2
    err = capsys.readouterr().err.strip()
    if backend == "sqlite":  # a file: it said "check that it is running" of a folder that cannot be written
        assert err.startswith("error: cannot open the database sqlite:") and "DIGITLAB_DATA_DIR" in err
    else:  # (a database not created yet: the server answers, and names it; it said "check that it is running")
        assert err.startswith("error: the database server at") and "does not exist): check DATABASE_URL" in err, err
    assert "\n" not in err


def test_an_admin_token_read_from_a_file_loses_its_newline(monkeypatch):
    """A token ending in a newline (`$(cat file)`, a Kubernetes secret from a file) could never be sent."""
    monkeypatch.setenv("DIGITLAB_ADMIN_TOKEN", "sekret\n")
    assert Settings().admin_token == "sekret"
    monkeypatch.setenv("DIGITLAB_ADMIN_TOKEN", "  ")
    assert Settings().admin_token is None


def test_from_settings_defaults(monkeypatch, tmp_path):
    for var in ("DATABASE_URL", "DIGITLAB_DATABASE_URL", "POSTGRES_HOST", "DIGITLAB_SPOOL_DIR"):
        monkeypatch.delenv(var, raising=False)
    store = from_settings(Settings(data_dir=tmp_path / "data", _env_file=None))
    try:
        assert store.url == f"sqlite:///{(tmp_path / 'data' / 'digitlab.db').as_posix()}"
        assert (tmp_path / "data").is_dir()
        assert store.spool.dir.parent == tmp_path / "data" / "spool"  # <data_dir>/spool/<host>-<pid>
        assert store.spool.dir.name.endswith(f"-{os.getpid()}")
        assert store.spool.dir.name.startswith(socket.gethostname()[:8].replace(" ", "_"))
    finally:
        store.engine.dispose()
    explicit = from_settings(Settings(data_dir=tmp_path, spool_dir=tmp_path / "mine", _env_file=None))
    assert explicit.spool.dir == tmp_path / "mine"
    explicit.engine.dispose()


@pytest.mark.parametrize("name", ["d%41b", "q?cache=shared", "a#b c"])
def test_the_database_is_in_the_data_folder_whatever_its_name(monkeypatch, tmp_path, name):
    """A data folder named "d%41b" put the SQLite database at ".../dAb" (which did not exist: every prediction
    spooled for good, an API probe, session 32), and "q?cache=shared" at ".../q", outside it."""
    from digitlab.core.config import Settings as Fresh

    for var in ("DATABASE_URL", "DIGITLAB_DATABASE_URL", "POSTGRES_HOST", "DIGITLAB_SPOOL_DIR"):
        monkeypatch.delenv(var, raising=False)
    folder = tmp_path / name
    store = from_settings(Fresh(data_dir=folder, _env_file=None)).start()
    try:
        assert store.add(make_record_for_folder()).stored == "database"
    finally:
        store.close()
    assert (folder / "digitlab.db").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing beside the folder


def make_record_for_folder():
    from digitlab.store.records import PredictionRecord

    return PredictionRecord(model_name="cnn", predicted_digit=9, probabilities=[0.01] * 9 + [0.91])


@pytest.mark.parametrize("argv", [["learn"], ["models", "list"], ["models", "rollback", "svm"]])
def test_an_unreachable_database_is_one_line_not_a_traceback(use_database, argv, capsys, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    use_database(f"postgresql+psycopg://postgres:secret@127.0.0.1:{port}/nowhere")
    monkeypatch.setenv("DIGITLAB_MODEL_DIR", str(tmp_path / "models"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the database postgresql+psycopg://postgres:***@127.0.0.1:")
    assert "secret" not in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["learn"], ["models", "list"], ["db", "upgrade"]])
def test_a_database_that_refuses_the_connection_is_named_so_not_unreachable(use_database, argv, capsys, tmp_path,
                                                                           monkeypatch):  # fmt: skip
    """A role that does not exist: the server was reached, yet it said "cannot reach the database ...: check that it
    is running" (an operator's probe, session 45), where `digitlab serve` says the server refuses the connection."""
    use_database("postgresql+psycopg://nobody-here:secret@127.0.0.1:5432/postgres")
    monkeypatch.setenv("DIGITLAB_MODEL_DIR", str(tmp_path / "models"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the database server at postgresql+psycopg://nobody-here:***@127.0.0.1:5432/postgres "
                          'refuses the connection (role "nobody-here" does not exist): check DATABASE_URL'), err
    assert "secret" not in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unreachable_line_says_a_held_lock_is_no_outage():
    from digitlab.cli.db import unreachable_line

    said = unreachable_line("postgresql+psycopg://u:***@db/x", "canceling statement due to lock timeout")
    assert said.startswith("the database postgresql+psycopg://u:***@db/x is busy: another process holds a lock"), said


def test_export_leaves_out_an_image_labelled_with_different_digits(use_database, store, make_record, make_png,
                                                                    tmp_path, capsys):  # fmt: skip
    """The same image labelled 3 by one person and 8 by another was exported twice, once with each label (a
    probe, session 27); learning leaves it out, and so does the dataset export now."""
    use_database(store.url)
    store.add(make_record(3, drawn=3, processed_png=make_png(3)))
    store.add(make_record(8, drawn=8, processed_png=make_png(3)))  # the same picture, another label
    store.add(make_record(4, drawn=4, processed_png=make_png(4)))
    store.add(make_record(4, drawn=4, processed_png=make_png(4)))  # the same picture, the same label: once
    assert main(["db", "export", "--format", "idx", "--out", str(tmp_path / "idx")]) == 0
    assert "exported 1 labelled drawings" in capsys.readouterr().out
    assert read_idx(tmp_path / "idx")[1].tolist() == [4]


def test_export_and_prune_refuse_a_data_folder_with_no_database(monkeypatch, tmp_path, capsys):
    """A mistyped DIGITLAB_DATA_DIR made an empty database there and reported "exported 0 labelled drawings"."""
    folder = tmp_path / "typo"
    for var in ("DATABASE_URL", "DIGITLAB_DATABASE_URL", "POSTGRES_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DIGITLAB_DATA_DIR", str(folder))
    get_settings.cache_clear()
    try:
        for argv in (["db", "export", "--out", str(tmp_path / "x.csv")], ["db", "prune", "--days", "30"]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"error: there is no database at {folder / 'digitlab.db'}"), err
        assert not folder.exists() and not (tmp_path / "x.csv").exists()
    finally:
        get_settings.cache_clear()


def test_the_embedded_database_needs_no_folder_made_first(monkeypatch, tmp_path, capsys):
    folder = tmp_path / "fresh" / "data"  # a fresh checkout: nothing made yet, the default SQLite store
    for var in ("DATABASE_URL", "DIGITLAB_DATABASE_URL", "POSTGRES_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DIGITLAB_DATA_DIR", str(folder))
    get_settings.cache_clear()
    try:
        assert main(["models", "list"]) == 0
        # read-only: it says so and makes nothing (a mistyped DIGITLAB_DATA_DIR got an empty database)
        out = capsys.readouterr().out
        assert out.startswith("no learned versions: there is no database at") and not folder.exists()
        assert main(["learn", "--min-new", "5"]) == 0  # likewise (it made one and said "0 drawings labelled")
        out = capsys.readouterr().out
        assert out.startswith(f"nothing learned: there is no database at {folder / 'digitlab.db'}"), out
        assert not folder.exists()
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(("variable", "value", "said"), [
    ("DIGITLAB_WORKERS", "abc", "bad setting DIGITLAB_WORKERS='abc': Input should be a valid integer"),
    ("DIGITLAB_WORKERS", "1000", "bad setting DIGITLAB_WORKERS='1000': Input should be less than or equal to 64"),
    ("POSTGRES_PORT", "x", "bad setting POSTGRES_PORT='x'"),
    ("DIGITLAB_MNIST_MIRRORS", "http://x", "DIGITLAB_MNIST_MIRRORS could not be read (a list is written as JSON"),
    ("DIGITLAB_ADMIN_TOKEN", "sékret", "bad setting DIGITLAB_ADMIN_TOKEN='***': Value error, must be printable ASCII"),
    # the secret is never printed: pasting the whole header ("Bearer ...") is a likely mistake, into pod logs
    ("DIGITLAB_ADMIN_TOKEN", "Bearer s3cr3t", "bad setting DIGITLAB_ADMIN_TOKEN='***': Value error, must be"),
    # a typo served the best ready model without a word
    ("DIGITLAB_DEFAULT_MODEL", "svn", "bad setting DIGITLAB_DEFAULT_MODEL='svn': Value error, is not a model"),
    # the UI started, and every page said the service was unreachable
    ("DIGITLAB_API_URL", "garbage", "bad setting DIGITLAB_API_URL='garbage': Value error, must be an http:// or"),
    ("DIGITLAB_API_URL", "http://api:80000", "bad setting DIGITLAB_API_URL='http://api:80000': Value error, has an"),
])  # fmt: skip
def test_a_bad_setting_is_one_line_naming_the_variable(monkeypatch, capsys, variable, value, said):
    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    try:
        assert main(["models", "list"]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert err.startswith(f"error: {said}") and len(err.strip().splitlines()) == 1
    assert "s3cr3t" not in err and "sékret" not in err


def test_a_model_folder_that_is_a_file_is_one_line(monkeypatch, capsys, tmp_path):
    """It was "<file>/svm.json is missing: run `digitlab train svm`": training would not have helped."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setenv("DIGITLAB_MODEL_DIR", str(afile))
    get_settings.cache_clear()
    try:
        assert main(["evaluate", "svm"]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert err.startswith(f"error: bad setting DIGITLAB_MODEL_DIR='{afile}': Value error, is a file, not a folder")


@pytest.mark.parametrize(("url", "argv"), [
    ("garbage", ["db", "upgrade"]),
    ("garbage", ["models", "list"]),
    ("mysql://user@localhost/db", ["db", "upgrade"]),  # a dialect whose driver is not installed
    ("garbage", ["serve", "--port", "0"]),  # refused before any worker starts (it would store nothing)
    ("postgresql://postgres@127.0.0.1:notaport/x", ["models", "list"]),  # was a traceback
    ("postgresql://postgres@127.0.0.1:notaport/x", ["serve", "--port", "0"]),
])  # fmt: skip
def test_an_unusable_database_url_is_one_line(use_database, capsys, url, argv):
    use_database(url)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: DATABASE_URL cannot be used (") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
@pytest.mark.parametrize("argv", [["db", "upgrade"], ["serve", "--port", "0"]])
def test_an_in_memory_sqlite_database_is_refused(use_database, capsys, url, argv):
    """It was "available" and stored nothing: each pooled connection is its own empty database."""
    use_database(url)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "in-memory SQLite database keeps nothing" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["db", "upgrade"], ["db", "prune", "--days", "30"], ["models", "list"],
                                  ["serve", "--port", "0"]])  # fmt: skip
def test_a_file_that_is_no_database_or_a_newer_schema_is_one_line(use_database, capsys, tmp_path, argv):
    """A damaged or wrong SQLite file, and a database migrated by a newer digitlab: ~115 lines of traceback
    from the CLI, and `serve` took either for an outage and spooled every prediction for ever."""
    garbage = tmp_path / "garbage.db"
    garbage.write_text("garbage garbage")
    use_database(f"sqlite:///{garbage}")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "(file is not a database)" in err and len(err.strip().splitlines()) == 1, err
    newer = f"sqlite:///{tmp_path / 'newer.db'}"
    use_database(newer)
    assert main(["db", "upgrade"]) == 0
    engine = make_engine(newer)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    engine.dispose()
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "migrated by a newer digitlab" in err and "9999" in err and len(err.strip().splitlines()) == 1, err


def test_paths_and_numbers_that_cannot_work_are_one_line(use_database, store, tmp_path, capsys):
    use_database(store.url)
    assert main(["db", "prune", "--days", "1000000"]) == 2  # overflowed the date arithmetic (a traceback)
    assert capsys.readouterr().err.strip() == "error: --days must be 1-36500"
    assert main(["db", "export", "--out", str(tmp_path)]) == 2  # a folder where a file is written
    err = capsys.readouterr().err
    assert "is not a regular file" in err and str(tmp_path) in err and ".tmp" not in err
    assert len(err.strip().splitlines()) == 1


def test_export_never_replaces_what_is_not_its_own_kind_of_target(use_database, store, make_record, make_png,
                                                                   tmp_path, capsys):  # fmt: skip
    """`--out` naming a device (it replaced /dev/full, run as root), an empty name (a traceback), a folder
    that does not exist (created without a word), a file where idx needs a folder: one line, nothing
    written. `-` is standard output."""
    use_database(store.url)
    store.add(make_record(1, drawn=1, processed_png=make_png(1)))
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (tmp_path / "file").write_text("mine")
    for argv, said in [
        (["--out", str(fifo)], "not a regular file"),
        (["--out", ""], "--out must name a file"),
        (["--out", str(tmp_path / "typo" / "x.csv")], "does not exist"),
        (["--format", "idx", "--out", str(tmp_path / "file")], "is not a folder"),
        (["--format", "idx", "--out", "-"], "--out must name a folder"),
        (["--out", str(tmp_path / "file" / "x.csv")], "file is a file, not a folder"),  # ("does not exist")
        (["--out", "/proc/version"], "could not write --out /proc/version: "),  # (it named /proc/version.tmp)
    ]:
        assert main(["db", "export", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and (tmp_path / "file").read_text() == "mine"
    assert not (tmp_path / "typo").exists()
    assert main(["db", "export", "--out", "-"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].startswith("label,pixel0") and len(captured.out.splitlines()) == 2
    assert "exported 1 labelled drawings to standard output" in captured.err


def test_the_command_line_export_has_the_digits_of_confirmed_numbers(use_database, store, make_png, tmp_path, capsys):
    """Like the API's export: labelled drawings, then each digit of a number whose author confirmed it."""
    from tests.store.test_numbers import number

    use_database(store.url)
    record = number("42")
    for i, d in enumerate(record.digits):
        d["processed_image"] = base64.b64encode(make_png(int("42"[i]), seed=i)).decode()
    read = store.add_number(record)
    assert store.set_number_feedback("42", id=read.id).stored == "database"
    assert main(["db", "export", "--out", str(tmp_path / "n.csv")]) == 0
    rows = (tmp_path / "n.csv").read_text().splitlines()[1:]
    assert [r.split(",", 1)[0] for r in rows] == ["4", "2"]


@pytest.mark.parametrize("argv", [
    ["models", "list", "zzz"],
    ["models", "rollback", "zzz"],
    ["models", "promote", "zzz", "1"],
    ["learn", "zzz"],  # it said "nothing learned: there is no database" first
    ["evaluate", "zzz"],
    ["train", "zzz"],
])  # fmt: skip
def test_an_unknown_model_name_is_said_so_in_one_wording(capsys, argv, monkeypatch, tmp_path):
    """Each command had its own ("unknown model(s) zzz: choose from", "unknown model: choose one of"; session 45)."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DIGITLAB_DATA_DIR", str(tmp_path / "nothing-here"))
    get_settings.cache_clear()
    try:
        assert main(argv) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'zzz': choose among cnn, svm, svm_pca, extra_trees, random_forest"), err


def test_evaluate_says_a_model_name_is_unknown_before_looking_for_mnist(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DIGITLAB_MNIST_DIR", str(tmp_path / "no-mnist-here"))
    get_settings.cache_clear()
    try:
        assert main(["evaluate", "zzz"]) == 2
    finally:
        get_settings.cache_clear()
    assert capsys.readouterr().err.startswith("error: unknown model 'zzz': choose among cnn")


@pytest.mark.parametrize(("variable", "folder", "says"), [
    ("DIGITLAB_SPOOL_DIR", "a-file", "is a file, not a folder"),
    ("DIGITLAB_DATA_DIR", "a-file", "is a file, not a folder"),
    # as root, `os.access` called /sys writable: serve started and stored nothing (session 45's operator probe)
    ("DIGITLAB_DATA_DIR", "/sys", "is not writable ("),
])  # fmt: skip
def test_serve_refuses_a_data_or_spool_folder_it_cannot_write(use_database, store, monkeypatch, tmp_path, capsys,
                                                              variable, folder, says):  # fmt: skip
    """It served every prediction unstored (`logged: false`) and /health blamed the database."""
    use_database(store.url)
    folder = tmp_path / folder
    if folder.name == "a-file":
        folder.write_text("")
    monkeypatch.setenv(variable, str(folder))
    get_settings.cache_clear()
    try:
        assert main(["serve", "--port", "0"]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(folder) in err and says in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [
    ["train", "svm", "--limit", "-5"],
    ["train", "svm", "--limit", "0"],  # trained on 100 style drawings and replaced the served model
    ["evaluate", "--numbers", "--count", "-3", "cnn"],
    ["evaluate", "--numbers", "--count", "0", "cnn"],
])  # fmt: skip
def test_counts_and_limits_out_of_range_are_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "must be at least" in capsys.readouterr().err


@pytest.mark.parametrize("port", ["99999", "-5"])
def test_the_ui_refuses_a_port_out_of_range_in_one_line(port, capsys):
    assert main(["ui", "--port", port]) == 2
    assert capsys.readouterr().err.strip() == f"error: port must be 0-65535, got {port}"


def test_export_to_a_reader_that_stops_early_ends_quietly(use_database, store, make_record, make_png, tmp_path):
    """`digitlab db export --out - | head -1` printed a BrokenPipeError traceback."""
    import subprocess
    import sys

    use_database(store.url)
    for i in range(60):  # ~3 KB a row: more than a pipe holds, so the writer meets the closed pipe
        store.add(make_record(i % 10, drawn=i % 10, processed_png=make_png(i % 10, seed=i)))
    env = {**os.environ, "DATABASE_URL": store.url, "DIGITLAB_DATA_DIR": str(tmp_path / "data")}
    run = subprocess.run(
        f"{sys.executable} -m digitlab db export --out - | head -c 100 > /dev/null; echo ${{PIPESTATUS[0]}}",
        shell=True, executable="/bin/bash", env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.stdout.strip() == "0" and "Traceback" not in run.stderr, run.stderr


def test_evaluate_refuses_options_it_would_ignore(capsys):
    """`evaluate --part calibration --count 3` ran the whole MNIST table and `--drawn --real` ran --real only,
    both silently: an option that does not apply is one line and exit 2."""
    assert main(["evaluate", "--count", "3"]) == 2
    assert "--count goes with --drawn, --real or --numbers" in capsys.readouterr().err
    assert main(["evaluate", "--real", "--part", "calibration"]) == 2
    assert "--part goes with --numbers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--drawn", "--real"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_version_and_bad_numbers_are_usage_lines(capsys):
    from digitlab import __version__

    with pytest.raises(SystemExit) as shown:
        main(["--version"])
    assert shown.value.code == 0 and capsys.readouterr().out.strip() == f"digitlab {__version__}"
    for argv, said in ((["train", "--jobs", "0"], "must be at least 1, got 0"),  # was taken as "every core"
                       (["ui", "--port", "http"], "'http' is not a whole number"),
                       (["db", "prune", "--days", "\u0661"], "is not a whole number (digits 0-9)"),  # int() read it as 1
                       (["learn", "--min-new", "1_000"], "is not a whole number")):  # fmt: skip
        with pytest.raises(SystemExit) as refused:
            main(argv)
        assert refused.value.code == 2 and said in capsys.readouterr().err


def test_a_bad_setting_from_the_env_file_says_so(monkeypatch, capsys, tmp_path):
    """A bad value in `.env` was reported as if it were in the environment, where it could not be found."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIGITLAB_WORKERS", raising=False)
    (tmp_path / ".env").write_text("# mine\nexport DIGITLAB_WORKERS = abc\n")
    get_settings.cache_clear()
    try:
        assert main(["models", "list"]) == 2
        assert "bad setting DIGITLAB_WORKERS='abc' (from .env): " in capsys.readouterr().err
        monkeypatch.setenv("DIGITLAB_WORKERS", "xyz")  # the environment wins over the file: no "(from .env)"
        get_settings.cache_clear()
        assert main(["models", "list"]) == 2
        assert "bad setting DIGITLAB_WORKERS='xyz': " in capsys.readouterr().err
    finally:
        get_settings.cache_clear()


def test_an_empty_model_name_is_an_unknown_model(capsys):
    """`models promote "" 2` said "model '' has no learned version", `rollback ""` printed an empty name."""
    for argv in (["models", "promote", "", "2"], ["models", "rollback", ""], ["models", "list", ""]):
        assert main(argv) == 2
        assert capsys.readouterr().err.startswith("error: unknown model")


@pytest.mark.parametrize(("user", "password"), [("us er", "a b"), ("me", "p+w@x/y:z%20?#"), ("ü", "pässwörd")])
def test_postgres_credentials_reach_the_driver_as_written(user, password):
    """POSTGRES_USER / POSTGRES_PASSWORD are given to PostgreSQL's own image as they are: a space was
    written '+' in the URL, which SQLAlchemy reads as a plus, so that login failed."""
    from sqlalchemy.engine import make_url

    url = make_url(Settings(_env_file=None, postgres_host="db", postgres_user=user, postgres_password=password)
                   .sqlalchemy_url)  # fmt: skip
    assert (url.username, url.password, url.host, url.database) == (user, password, "db", "digitlab")


def test_a_path_that_cannot_be_a_folder_names_its_setting(monkeypatch, tmp_path, capsys):
    """`DIGITLAB_DATA_DIR` under a file: the line named the folder but sent the reader to "the path settings
    and --out" (`db upgrade` has no --out)."""
    (tmp_path / "file").write_text("")
    for var in ("DATABASE_URL", "DIGITLAB_DATABASE_URL", "POSTGRES_HOST", "DIGITLAB_SPOOL_DIR", "DIGITLAB_MNIST_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DIGITLAB_DATA_DIR", str(tmp_path / "file" / "data"))
    get_settings.cache_clear()
    try:
        assert main(["db", "upgrade"]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert str(tmp_path / "file" / "data") in err and "DIGITLAB_DATA_DIR" in err, err
    assert f"{tmp_path / 'file'} is a file, not a folder" in err, err  # (it said "File exists")


def test_a_rollback_to_the_files_says_how_to_serve_a_listed_version(use_database, tmp_path, capsys):
    """It said "no learned version left" while rejected versions were still listed (and promotable)."""
    from digitlab.store.versions import VersionStore

    url = f"sqlite:///{(tmp_path / 'v.db').as_posix()}"
    use_database(url)
    assert main(["db", "upgrade"]) == 0
    versions = VersionStore(make_engine(url))
    versions.add("svm", "2", b"model bytes", {"version": "2"}, status="promoted", parent="1.0.0")
    capsys.readouterr()
    assert main(["models", "rollback", "svm"]) == 0
    out = capsys.readouterr().out
    assert "rolled back to the version of its files" in out and "digitlab models promote svm VERSION" in out, out


def test_serve_refuses_one_spool_folder_for_several_workers(use_database, store, monkeypatch, tmp_path, capsys):
    """The second worker found the spool locked: every prediction it answered was neither stored nor spooled
    (`logged: false`), and /health said "database unavailable" every other request."""
    use_database(store.url)
    monkeypatch.setenv("DIGITLAB_SPOOL_DIR", str(tmp_path / "spool"))
    err = _one_line_error(capsys, ["serve", "--port", "0", "--workers", "2"])
    assert "is one process's spool, and the API starts 2 workers" in err


@pytest.mark.parametrize(("argv", "says"), [
    (["train", "svm", "--out", "OUT"], "--out goes with detector, segment_verifier or line_reader only; svm is written to"),
    (["train", "--calibrate-only"], "--calibrate-only goes with detector only"),
    (["train", "detector", "--calibrate-only", "--out", "A_FILE"], "--out A_FILE cannot be used as a folder"),
])  # fmt: skip
def test_train_refuses_options_it_would_ignore_or_fail_on_late(argv, says, monkeypatch, tmp_path, capsys):
    """`train svm --out X` replaced the served svm in DIGITLAB_MODEL_DIR; `--out` naming a file failed after
    minutes of rendering."""
    monkeypatch.setenv("DIGITLAB_MODEL_DIR", str(tmp_path / "models"))
    (tmp_path / "a-file").write_text("")
    names = {"OUT": str(tmp_path / "out"), "A_FILE": str(tmp_path / "a-file")}
    err = _one_line_error(capsys, [names.get(a, a) for a in argv])
    assert says.replace("A_FILE", names["A_FILE"]) in err
    assert not (tmp_path / "models").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("argv", "says"), [
    (["evaluate", "--drawn", "--seed", "-1"], "must be at least 0"),  # numpy's traceback
    (["evaluate", "--drawn", "--count", "999999999999"], "must be at most 100,000"),  # 7 EiB asked for
    (["evaluate", "--numbers", "--count", "100001"], "must be at most 100,000"),  # silence for ever
])  # fmt: skip
def test_evaluate_refuses_seeds_and_counts_it_cannot_use(argv, says, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2 and says in capsys.readouterr().err


def test_a_dot_env_that_is_not_utf8_is_one_line(monkeypatch, tmp_path, capsys):
    """A .env saved by Notepad or PowerShell (UTF-16) ended every command in a UnicodeDecodeError traceback."""
    (tmp_path / ".env").write_text("DIGITLAB_WORKERS=1\n", encoding="utf-16")
    monkeypatch.chdir(tmp_path)
    assert "is not UTF-8 text" in _one_line_error(capsys, ["db", "upgrade"])


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("DIGITLAB_PORT", "0", "DIGITLAB_PORT=0 (any free port) cannot be used by `digitlab run`"),  # waited for ever
    ("DIGITLAB_PORT", "70000", "bad setting DIGITLAB_PORT='70000'"),  # named DIGITLAB_API_URL, after starting the UI
    ("DIGITLAB_UI_PORT", "-3", "bad setting DIGITLAB_UI_PORT='-3'"),
])  # fmt: skip
def test_run_refuses_ports_it_cannot_use_before_starting_anything(variable, value, says, monkeypatch, capsys):
    monkeypatch.setenv(variable, value)
    assert says in _one_line_error(capsys, ["run", "--no-train"])


@pytest.mark.parametrize("url", ["postgresql://postgres@127.0.0.1:5432/digitlab_no_such_database",
                                 "postgresql://digitlab_no_such_role@127.0.0.1:5432/postgres"])  # fmt: skip
def test_serve_refuses_a_database_the_server_says_never_exists(use_database, capsys, url):
    """It started, spooled every prediction and said "database unavailable" for ever (an outage that never
    ends); `db upgrade` said why at once."""
    use_database(url)
    err = _one_line_error(capsys, ["serve", "--port", "0"])
    assert err.startswith("error: the database server refuses the connection (") and "does not exist" in err


def test_an_empty_folder_setting_is_refused_or_the_default(monkeypatch, tmp_path, capsys):
    """`DIGITLAB_DATA_DIR=` (as `${VAR:-}` gives it) meant the current folder: a digitlab.db appeared wherever
    the command ran."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIGITLAB_DATA_DIR", "")
    get_settings.cache_clear()
    try:
        assert main(["db", "upgrade"]) == 2
        assert "bad setting DIGITLAB_DATA_DIR='': Value error, is empty" in capsys.readouterr().err
        assert not list(tmp_path.iterdir())
        monkeypatch.setenv("DIGITLAB_SPOOL_DIR", " ")  # an optional one: as if unset
        assert Settings(data_dir=tmp_path / "d").spool_dir is None
    finally:
        get_settings.cache_clear()


def test_output_to_a_full_disk_is_one_line(tmp_path):
    """`digitlab models list > /dev/full` (and evaluate's tables) ended in an OSError traceback."""
    import subprocess
    import sys

    env = {**os.environ, "DIGITLAB_DATA_DIR": str(tmp_path / "data")}
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "digitlab", "models", "list"], env=env, stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 1 and done.stderr.strip() == "error: No space left on device", done.stderr


def test_serve_refuses_a_database_user_who_may_not_create_the_tables(pg_databases, admin_connect):
    """Its workers' migration failed, every insert then found no table, which was taken for an outage: every
    prediction spooled for ever and /health said "database unavailable"."""
    import uuid

    from sqlalchemy.engine import make_url

    url, name = pg_databases.create()
    role = f"digitlab_test_{uuid.uuid4().hex[:8]}"
    with admin_connect() as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')  # (PostgreSQL 15: no CREATE on schema public for others)
    try:
        from digitlab.api.server import check_database_schema
        from digitlab.errors import DigitlabError

        # (the check `serve` runs before its workers start; without it, `serve` started and ran for ever)
        with pytest.raises(DigitlabError, match="the database user may not create digitlab's tables .*CREATE"):
            check_database_schema(make_url(url).set(username=role).render_as_string(hide_password=False))
    finally:
        with admin_connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_serve_refuses_a_model_folder_it_cannot_read(tmp_path):
    """Every worker stopped with a 90-line traceback (PermissionError in Path.exists) and `serve --workers 2`
    exited 0 (a probe, session 27). Root reads any folder: the check runs without its override capabilities."""
    import os
    import shlex
    import subprocess
    import sys

    models = tmp_path / "models"
    models.mkdir()
    models.chmod(0)
    cmd = [sys.executable, "-m", "digitlab", "serve", "--port", "0", "--workers", "2"]
    if os.geteuid() == 0:
        cmd = ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", shlex.join(cmd)]
    env = {**os.environ, "DIGITLAB_MODEL_DIR": str(models), "DIGITLAB_DATA_DIR": str(tmp_path / "data"),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'p.db'}"}  # fmt: skip
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    finally:
        models.chmod(0o755)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == f"error: DIGITLAB_MODEL_DIR={models} cannot be read (Permission denied): point it at a readable folder"


def test_ctrl_c_on_a_job_says_it_did_not_finish(monkeypatch, capsys):
    """`train` and `learn` stopped by Ctrl-C ended with exit 130 and no word (a probe, session 30); a server
    (`serve`, `run`), for which Ctrl-C is the stop, says nothing more."""
    from types import SimpleNamespace

    from digitlab import cli

    def interrupted(_args):
        raise KeyboardInterrupt

    real = cli.build_parser()

    def parser():
        def parse(argv=None):
            args = real.parse_args(argv)
            args.func = interrupted
            return args

        return SimpleNamespace(parse_args=parse)

    monkeypatch.setattr(cli, "build_parser", parser)
    assert cli.main(["learn"]) == 130
    assert "stopped by Ctrl-C: `digitlab learn` did not finish" in capsys.readouterr().err
    assert cli.main(["serve"]) == 130
    assert capsys.readouterr().err == ""


def _main_with(monkeypatch, env: dict[str, str], argv: list[str]) -> int:
    """`digitlab ARGV` under these environment settings (the settings read afresh, and forgotten after)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        return main(argv)
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("setting", ["DIGITLAB_DATA_DIR", "DIGITLAB_SPOOL_DIR", "DIGITLAB_MNIST_DIR", "DIGITLAB_MODEL_DIR"])
def test_a_folder_setting_under_a_file_is_one_line_naming_it(setting, monkeypatch, capsys, tmp_path):
    """A file where a folder (or its parent) should be said "File exists", "Not a directory", or "svm.json is
    missing: run `digitlab train svm`", some only after seconds of work (a probe, session 30)."""
    afile = tmp_path / "env.sh"
    afile.write_text("x")
    for value, said in ((afile, "is a file, not a folder"), (afile / "sub", f"{afile} is a file, not a folder")):
        assert _main_with(monkeypatch, {setting: str(value)}, ["db", "upgrade"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: bad setting {setting}='{value}'") and said in err and "\n" not in err.strip(), err


def test_train_refuses_a_model_folder_it_cannot_make_before_any_work(monkeypatch, capsys):
    """`DIGITLAB_MODEL_DIR=/proc/x digitlab train` failed only after seconds of style drawings (a probe, session 30)."""
    assert _main_with(monkeypatch, {"DIGITLAB_MODEL_DIR": "/proc/digitlab-models"}, ["train", "svm", "--limit", "3000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: DIGITLAB_MODEL_DIR /proc/digitlab-models cannot be used as a folder"), err


def test_models_list_without_versions_says_what_is_served(use_database, db_url, monkeypatch, tmp_path, capsys):
    """No learned version: the files are served, if the model has any (`models list svm` said "the models' files
    are served" of an svm never trained)."""
    use_database(db_url)
    monkeypatch.setenv("DIGITLAB_MODEL_DIR", str(tmp_path / "no-models"))  # nothing trained: the bundled CNN only
    get_settings.cache_clear()
    assert main(["models", "list", "svm"]) == 0
    assert capsys.readouterr().out.strip() == (
        "no learned versions of svm, and it is not trained: `digitlab train svm` builds it")
    assert main(["models", "list", "cnn"]) == 0
    assert capsys.readouterr().out.startswith("no learned versions of cnn yet: its files are served")
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "the models' files are served (svm, svm_pca, extra_trees, random_forest not trained)" in out, out
