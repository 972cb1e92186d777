"""The repository through PredictionStore, on both backends: insert, feedback, history, images, stats,
export, deletion, concurrency."""

from __future__ import annotations

import io
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy import text

from digitlab.store.export import CSV_HEADER, png_to_pixels, read_idx


def test_add_and_read_back(store, make_record, make_png):
    drawing, processed = b"\x89PNG fake drawing bytes", make_png(4)
    rec = make_record(
        4,
        drawn=4,
        model="cnn",
        model_version="1.2.0",
        pen_color="#FFFFFF",
        background_color="#000000",
        image_png=drawing,
        processed_png=processed,
        latency_ms=12.5,
        session_id="s1",
        source="ui",
    )
    result = store.add(rec)
    assert result.stored == "database" and result.uid == rec.uid and result.id == 1

    row = store.get(result.id)
    assert (row.model_name, row.model_version, row.predicted_digit, row.drawn_digit, row.correct) == (
        "cnn",
        "1.2.0",
        4,
        4,
        True,
    )
    assert row.probability == pytest.approx(0.91)
    assert row.probabilities == pytest.approx(rec.probabilities)
    assert (row.latency_ms, row.session_id, row.source, row.has_image, row.has_processed) == (
        12.5,
        "s1",
        "ui",
        True,
        True,
    )
    assert row.timestamp == rec.timestamp  # microseconds survive; returned as aware UTC
    assert json.loads(row.model_dump_json())["timestamp"] == rec.timestamp.isoformat()
    assert store.get_image(result.id) == drawing
    assert store.get_image(result.id, "processed") == processed
    assert store.get(999) is None and store.get_image(999) is None
    with pytest.raises(ValueError):
        store.get_image(result.id, "thumbnail")

    with store.engine.connect() as conn:  # plain SQL sees the original columns, probabilities as JSON
        probs, correct = conn.execute(text("SELECT probabilities, correct FROM user_predictions")).one()
    assert json.loads(probs) == pytest.approx(rec.probabilities) and correct


def test_the_not_sure_flag_is_kept_through_the_database_and_the_spool(store, make_record, tmp_path):
    """`uncertain` (migration 0010) as the answer showed it; a later stroke of the drawing replaces it; a record
    spooled before the column existed (no key) reads back as unknown."""
    sure, unsure = make_record(4), make_record(5)
    sure.uncertain, unsure.uncertain = False, True
    ids = [store.add(r).id for r in (sure, unsure)]
    assert [store.get(i).uncertain for i in ids] == [False, True]
    first, later = make_record(1), make_record(7)
    first.drawing_id = later.drawing_id = "d1"
    first.uncertain, later.uncertain = True, False
    (row_id,) = {store.add(first).id, store.add(later).id}
    assert store.get(row_id).uncertain is False
    old = {k: v for k, v in unsure.to_json().items() if k != "uncertain"}
    assert type(unsure).from_json(old).uncertain is None
    assert type(unsure).from_json(unsure.to_json()).uncertain is True


def test_adding_the_same_uid_twice_stores_one_row(store, make_record):
    rec = make_record()
    assert store.add(rec).id == store.add(rec).id
    assert store.count() == 1


def test_feedback(store, make_record):
    a = store.add(make_record(3)).id
    b_rec = make_record(5)
    store.add(b_rec)
    assert store.set_feedback(a, 3) is True
    assert store.set_feedback_by_uid(b_rec.uid, 6) is True
    assert (store.get(a).drawn_digit, store.get(a).correct) == (3, True)
    b = store.get(store.list()[0][0].id)
    assert (b.uid, b.drawn_digit, b.correct) == (b_rec.uid, 6, False)
    assert store.set_feedback(a, None) is True  # withdrawn
    assert (store.get(a).drawn_digit, store.get(a).correct) == (None, None)
    assert store.set_feedback(12345, 1) is False
    assert store.set_feedback_by_uid("nope", 1) is False
    with pytest.raises(ValueError):
        store.set_feedback(a, 10)


def test_history_pages_and_filters(store, make_record):
    start = datetime(2026, 1, 1, 12, tzinfo=UTC)
    for i in range(25):
        drawn = None if i % 5 == 0 else (i % 10 if i % 3 else (i + 1) % 10)
        store.add(
            make_record(
                i % 10, drawn=drawn, model="svm" if i % 2 else "knn", timestamp=start + timedelta(hours=i)
            )
        )

    rows, total = store.list(page=1, page_size=10)
    assert total == 25 and len(rows) == 10
    assert [r.timestamp for r in rows] == sorted((r.timestamp for r in rows), reverse=True)
    assert rows[0].timestamp == start + timedelta(hours=24)
    last, _ = store.list(page=3, page_size=10)
    assert len(last) == 5 and last[-1].timestamp == start
    assert store.list(page=4, page_size=10) == ([], 25)
    assert not hasattr(rows[0], "image_png")

    svm, n = store.list(model="svm", page_size=100)
    assert n == 12 and {r.model_name for r in svm} == {"svm"}
    right, n_right = store.list(correct=True, page_size=100)
    wrong, n_wrong = store.list(correct=False, page_size=100)
    assert all(r.correct for r in right) and not any(r.correct for r in wrong)
    assert n_right + n_wrong == 20  # the five unlabelled rows are in neither

    window, n = store.list(since=start + timedelta(hours=10), until=start + timedelta(hours=15))
    assert n == 5 and {r.timestamp.hour for r in window} == {22, 23, 0, 1, 2}
    local = start.astimezone(timezone(timedelta(hours=2)))
    assert store.list(since=local)[1] == 25  # aware datetimes are compared in UTC
    assert store.list(model="svm", correct=True, since=start + timedelta(hours=12))[1] == sum(
        1 for r in right if r.model_name == "svm" and r.timestamp >= start + timedelta(hours=12)
    )


def test_stats_per_model(store, make_record):
    pairs = [(1, 1), (1, 1), (2, 7), (7, 7), (3, None), (9, 4)]  # (predicted, drawn)
    for predicted, drawn in pairs:
        store.add(make_record(predicted, drawn=drawn, model="svm"))
    store.add(make_record(5, drawn=5, model="cnn"))

    stats = store.stats()
    assert set(stats) == {"svm", "cnn"}
    svm = stats["svm"]
    assert (svm["predictions"], svm["labelled"], svm["correct"]) == (6, 5, 3)
    assert svm["accuracy"] == pytest.approx(3 / 5)
    cm = np.array(svm["confusion_matrix"])  # rows: true digit, columns: predicted
    assert cm.shape == (10, 10) and cm.sum() == 5
    assert (cm[1, 1], cm[7, 2], cm[7, 7], cm[4, 9]) == (2, 1, 1, 1)
    today = datetime.now(UTC).date().isoformat()
    assert svm["daily"] == [{"date": today, "labelled": 5, "correct": 3, "accuracy": pytest.approx(0.6)}]
    assert list(store.stats("cnn")) == ["cnn"] and store.stats("cnn")["cnn"]["accuracy"] == 1.0
    assert store.stats("nobody") == {}


def test_stats_asked_by_many_at_once_are_few_queries_each_read_after_it_was_asked(store, make_record, monkeypatch):
    """`/stats` is open and groups the whole table (0.26 s with 200,000 rows): 40 clients at once kept the store's
    query threads full, each answer took 3.7 s and a label waited 5.9 s behind them (a probe, session 49). Calls
    that arrive while one runs share the next run; none gets a result read before it asked."""
    import time

    store.add(make_record(1, drawn=1, model="svm"))
    runs, real = [], store.repo.stats

    def slow_stats(model=None):
        runs.append(model)
        time.sleep(0.3)  # (a big table)
        return real(model)

    monkeypatch.setattr(store.repo, "stats", slow_stats)
    first = threading.Thread(target=store.stats)
    first.start()
    time.sleep(0.1)  # the first query runs
    store.add(make_record(7, drawn=7, model="svm"))  # labelled after that query began
    answers: list[dict] = []
    callers = [threading.Thread(target=lambda: answers.append(store.stats())) for _ in range(20)]
    for t in callers:
        t.start()
    for t in [first, *callers]:
        t.join(10)
    assert len(answers) == 20
    assert all(a["svm"]["labelled"] == 2 for a in answers)  # each read after it asked
    assert len(runs) == 2, runs  # the first, then one for the 20 that arrived during it (20 before)
    answers[0]["svm"]["labelled"] = -1  # each caller has its own copy
    assert answers[1]["svm"]["labelled"] == 2
    assert store.stats("cnn") == {} and runs[-1] == "cnn"  # another filter is another query
    monkeypatch.undo()
    for n in range(50):  # (`?model=` is any text a client sends: nothing is kept once answered)
        store.stats(f"nobody-{n}")
    assert store._stats._arrived == store._stats._done == store._stats._inside == {}


def test_a_label_never_waits_behind_slow_reads(store, make_record):
    """Labels ran in the threads reads run in: behind 12 exports at once a label outwaited its write deadline, was
    spooled, and the store went to spool mode with the database up (/health "unavailable", then "catching_up";
    a probe, session 49). Writes have threads of their own."""
    import time

    from digitlab.store.store import DIRECT_THREADS

    id = store.add(make_record(3)).id
    reads = [threading.Thread(target=store.with_database, args=(time.sleep, 3.0)) for _ in range(2 * DIRECT_THREADS)]
    for t in reads:  # (a slow export each: the read threads busy for 6 s)
        t.start()
    time.sleep(0.2)
    started = time.monotonic()
    assert store.set_feedback(id, 5) is True
    took = time.monotonic() - started
    assert store.health()["database"] == "ok" and store.pending() == 0  # stored, not spooled
    assert took < 1.0, f"the label waited {took:.1f} s behind reads"
    for t in reads:
        t.join(10)
    assert store.get(id).drawn_digit == 5


def test_export_csv_and_idx(store, make_record, make_png, tmp_path):
    pngs = {i: make_png(i, seed=i) for i in range(4)}
    for i, png in pngs.items():
        store.add(make_record(i, drawn=(i + 1) % 10, processed_png=png))
    store.add(make_record(5, processed_png=make_png(5)))  # unlabelled: not exported
    store.add(make_record(6, drawn=6))  # no processed image: not exported

    out = tmp_path / "export" / "drawn.csv"
    assert store.export_csv(out) == 4
    lines = out.read_text().splitlines()
    assert lines[0] == CSV_HEADER and len(lines[0].split(",")) == 785 and len(lines) == 5
    first = [int(v) for v in lines[1].split(",")]
    assert first[0] == 1 and first[1:] == png_to_pixels(pngs[0]).tolist()

    buf = io.StringIO()
    assert store.export_csv(buf) == 4 and buf.getvalue() == out.read_text()

    assert store.export_idx(tmp_path / "idx") == 4
    images, labels = read_idx(tmp_path / "idx")
    assert images.shape == (4, 28, 28) and labels.tolist() == [1, 2, 3, 4]
    assert images[2].reshape(784).tolist() == png_to_pixels(pngs[2]).tolist()


def test_the_strokes_of_a_drawing_keep_one_id_and_take_no_other(store, make_record):
    """Every stroke is an upsert, which took a number from the id sequence even when it only updated: the ids
    people see skipped ("saved to the history as #12" after the 9th drawing; History's "#" 19, 18, 17, 15, 12)."""
    drawing, other = (uuid.uuid4().hex for _ in range(2))
    first = store.add(make_record(1, drawing_id=drawing)).id
    labelled = store.add(make_record(2, drawing_id=drawing, drawn=2)).id
    assert labelled == first and store.add(make_record(3, drawing_id=drawing)).id == first
    row = store.repo.get(first)
    assert (row.predicted_digit, row.drawn_digit) == (3, 2)  # the latest stroke, the label given before it
    assert store.add(make_record(4, drawing_id=other)).id == first + 1


def test_the_export_has_one_row_per_labelled_drawing(store, make_record, make_png):
    """A drawing is stored once per model that answered it: Compare's one answer put the same drawing in the
    export five times (one wrong answer outweighed a right one 5 to 1). Now one row per drawing, with the
    label given last; records without a drawing id, one per distinct image and label; an image labelled with
    different digits is left out, as learning leaves it out."""
    compare = make_png(1, seed=1)
    ids = [store.add(make_record(1, model=m, drawn=1, drawing_id="d-compare", processed_png=compare)).id
           for m in ("cnn", "svm", "svm_pca", "extra_trees", "random_forest")]  # fmt: skip
    store.set_feedback(ids[2], 7)  # the person changed their mind, on one model's record: given last
    api = make_png(2, seed=2)
    for m in ("cnn", "svm", "svm_pca"):  # model=all from an API client: no drawing id
        store.add(make_record(2, model=m, drawn=2, processed_png=api))
    store.add(make_record(2, model="cnn", drawn=3, processed_png=api))  # the same image, another label
    rows = list(store.repo.labelled_images())
    assert [digit for digit, _ in rows] == [7]
    assert [png for _, png in rows] == [compare]
    store.add(make_record(4, model="cnn", drawn=4, processed_png=make_png(4, seed=4)))
    store.add(make_record(4, model="svm", drawn=4, processed_png=make_png(4, seed=4)))  # the same, agreeing
    assert [digit for digit, _ in store.repo.labelled_images()] == [7, 4]
    buf = io.StringIO()
    assert store.export_csv(buf) == 2


def test_delete_by_id_and_by_age(store, make_record):
    now = datetime.now(UTC)
    old = [store.add(make_record(timestamp=now - timedelta(days=40 + i))).id for i in range(3)]
    new = [store.add(make_record(timestamp=now - timedelta(days=i))).id for i in range(2)]
    assert store.delete(new[0]) is True and store.delete(new[0]) is False
    assert store.delete_older_than(30) == (3, 0)
    assert [r.id for r in store.list()[0]] == [new[1]]
    assert all(store.get(i) is None for i in old)
    with pytest.raises(Exception, match="at least 1 day"):
        store.delete_older_than(0)


def test_concurrent_adds_from_many_threads(store, make_record):
    ids: list[int] = []
    lock = threading.Lock()

    def work():
        for _ in range(15):
            result = store.add(make_record())
            with lock:
                ids.append(result.id)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 60 and len(set(ids)) == 60 and None not in ids
    assert store.count() == 60


def test_add_many_returns_each_records_own_id_in_order(store, make_record):
    records = [make_record(d) for d in range(5)]
    results = store.add_many(records)
    assert [r.stored for r in results] == ["database"] * 5
    assert [store.get(r.id).uid for r in results] == [rec.uid for rec in records]
    assert [store.get(r.id).predicted_digit for r in results] == list(range(5))


def test_concurrent_adds_share_commits_and_each_caller_gets_its_own_id(store, make_record):
    """Group commit: records queued while the writer commits go into one transaction, and every
    caller still gets the id of its own row; a uid sent twice (a retry) in the same batch stays one row."""
    batches: list[int] = []
    insert_many = store.repo.insert_many

    def counting(records):
        batches.append(len(records))
        return insert_many(records)

    store.repo.insert_many = counting
    retried = make_record(7)
    answers: list[tuple[str, int]] = []
    lock = threading.Lock()

    def work(i: int):
        for j in range(20):
            rec = retried if (i, j) in ((0, 10), (1, 10)) else make_record(j % 10)
            result = store.add(rec)
            with lock:
                answers.append((rec.uid, result.id))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 320 and None not in {id for _, id in answers}
    assert all(store.get(id).uid == uid for uid, id in answers)
    assert store.count() == 319  # the retried record is stored once
    assert len({id for uid, id in answers if uid == retried.uid}) == 1
    assert max(batches) > 1 and len(batches) < 320  # commits were shared


def test_rows_written_by_the_original_app_are_readable(store):
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO user_predictions (model_name, drawn_digit, predicted_digit, probability, "
                "probabilities, correct) VALUES ('old', 2, 2, 0.9, :p, true)"
            ),
            {"p": "[0.0, 0.0, 0.9, 0.1, 0, 0, 0, 0, 0, 0]"},
        )
        conn.execute(text("INSERT INTO user_predictions (model_name, probabilities) VALUES ('odd', 'n/a')"))
    rows, total = store.list()
    assert total == 2
    by_model = {r.model_name: r for r in rows}
    assert by_model["old"].probabilities[2] == 0.9 and by_model["old"].correct is True
    assert by_model["odd"].probabilities is None and by_model["odd"].uid is None
    assert by_model["old"].timestamp is not None  # DEFAULT CURRENT_TIMESTAMP still applies
    assert store.stats()["old"]["accuracy"] == 1.0


def test_group_commit_fails_queued_writes_at_once_when_the_database_is_known_away(store, make_record):
    """Records queued behind a write that found the database gone are not tried again (another
    connect timeout each): the writer hands them back so the store spools them."""
    from digitlab.store.writer import GroupCommit, WriteSkipped

    away = threading.Event()
    writer = GroupCommit(store.repo, skip=away.is_set)
    writer.start()
    try:
        assert len(writer.insert([make_record(), make_record()])) == 2
        away.set()
        with pytest.raises(WriteSkipped):
            writer.insert([make_record()])
    finally:
        writer.close()
    assert store.count() == 2


def test_add_many_async_returns_before_the_commit_and_settles_after_it(store, make_record):
    """The API awaits this Future on its event loop: submitting must not wait for the database."""
    release = threading.Event()
    insert_many = store.repo.insert_many

    def slow(records):
        release.wait(10)  # a slow database
        return insert_many(records)

    store.repo.insert_many = slow
    records = [make_record(3), make_record(4)]
    future = store.add_many_async(records)
    assert not future.done()  # submitted, not committed
    release.set()
    results = future.result(timeout=10)
    assert [r.stored for r in results] == ["database"] * 2
    assert [store.get(r.id).uid for r in results] == [rec.uid for rec in records]


def test_add_many_async_spools_when_the_commit_fails(store, make_record):
    from sqlalchemy.exc import OperationalError

    def down(records):
        raise OperationalError("INSERT", {}, Exception("server closed the connection"))

    store.repo.insert_many = down
    record = make_record(5)
    [result] = store.add_many_async([record]).result(timeout=10)
    assert result.stored == "spool" and result.id is None and result.uid == record.uid
    # in the spool, or already replayed by the drain thread, which the outage woke (the database itself works
    # here: a CI run found the spool empty that moment)
    assert store.spool.pending == 1 or store.get_by_uid(record.uid) is not None


def test_closing_does_not_wait_for_a_write_stuck_on_a_frozen_database(store, make_record):
    """A batch stuck on a frozen database, its callers answered by the deadline (their records spooled by the
    store), held the shutdown of every API worker for 10 s (an API probe, session 32): close waits only while a
    caller still waits. Without a deadline (scripts) it still waits for the queued records."""
    import time

    from digitlab.store.writer import GroupCommit, WriteTimedOut

    release = threading.Event()
    insert_many = store.repo.insert_many
    store.repo.insert_many = lambda records: release.wait(30) and insert_many(records)
    writer = GroupCommit(store.repo, deadline=0.3)
    writer.start()
    try:
        with pytest.raises(WriteTimedOut):
            writer.insert([make_record()])
        started = time.monotonic()
        writer.close(timeout=10)
        assert time.monotonic() - started < 1.0
    finally:
        release.set()
    store.repo.insert_many = insert_many
    patient = GroupCommit(store.repo)  # no deadline: what is queued is committed before close returns
    patient.start()
    future = patient.submit([make_record(), make_record()])
    patient.close()
    assert len(future.result(timeout=0)) == 2


def test_a_paused_process_is_not_a_database_that_does_not_answer(store, make_record, monkeypatch):
    """A worker stopped for 15-18 s (SIGSTOP, a frozen container) with a write in flight resumed with that
    write "not answered in 5 s" although the database's answer was waiting to be read: its records spooled,
    "database unavailable" logged, /stats 503 for a moment (an API probe, session 50). The pause is not
    counted against the write deadline; a database that does not answer still is."""
    import time

    from digitlab.store import writer as writer_module
    from digitlab.store.writer import GroupCommit, WriteTimedOut

    jumped = [0.0]

    class PausedClock:  # the process's clock: after a pause it has jumped by the pause
        @staticmethod
        def monotonic() -> float:
            return time.monotonic() + jumped[0]

    monkeypatch.setattr(writer_module, "time", PausedClock)
    inserting, release = threading.Event(), threading.Event()
    insert_many = store.repo.insert_many

    def answered_after_the_pause(records):
        inserting.set()
        release.wait(10)
        return insert_many(records)

    store.repo.insert_many = answered_after_the_pause
    stalls = []
    writer = GroupCommit(store.repo, deadline=2.0, on_stall=lambda: stalls.append(True))
    writer.start()
    try:
        future = writer.submit([make_record()])
        assert inserting.wait(5)
        jumped[0] += 15.0  # stopped for 15 s, the insert sent
        time.sleep(0.6)  # the watchdog's ticks after the pause
        release.set()  # the answer, read once the process runs again
        assert len(future.result(timeout=5)) == 1
        assert not stalls
        release.clear()
        with pytest.raises(WriteTimedOut):  # a database that does not answer is still noticed
            writer.submit([make_record()]).result(timeout=5)
        assert stalls
    finally:
        release.set()
        writer.close()
        store.repo.insert_many = insert_many
