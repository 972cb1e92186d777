"""Prediction records to the store, off the request's thread: the route awaits a Future that never
fails (a store failure leaves `logged: false` and counts in `digitlab_store_write_failures_total`).
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, InvalidStateError

from digitlab.api.context import AppContext
from digitlab.api.prediction import Computed

log = logging.getLogger("digitlab.api")


def log_predictions_async(ctx: AppContext, computed: Computed) -> Future:
    """Hand the records to the store at once; the returned Future is done when `id` and `logged` are
    filled in. It never fails: a store failure leaves `logged: false` and counts in
    `digitlab_store_write_failures_total`. (The route awaits it on the event loop: no thread waits.)"""
    done: Future = Future()
    pairs = list(zip(computed.results, computed.records, strict=True))
    valid = [(result, record) for result, record in pairs if record is not None] if ctx.store else []
    ctx.metrics.store_failures.inc(len(pairs) - len(valid))  # no store, or a record that was refused
    if not valid:
        done.set_result(None)
        return done

    def settle(stored: Future) -> None:
        try:
            added_all = stored.result()
        except Exception as exc:  # noqa: BLE001
            log.error("%d prediction(s) not logged: %s: %s", len(valid), type(exc).__name__, exc)
            ctx.metrics.store_failures.inc(len(valid))
            ctx.store.note_write(False)
            ctx.note_unlogged(record.uid for _, record in valid)
        else:
            if any(added.stored == "database" for added in added_all):  # (spooled: the database is still
                ctx.store.note_write(True)  # untested; a full disk said "ok" between two failed writes)
            for (result, _), added in zip(valid, added_all, strict=True):
                if added.stored == "refused":  # the database will not take it: not stored, and said so
                    ctx.metrics.store_failures.inc()
                    ctx.note_unlogged([added.uid])
                    continue
                ctx.metrics.logged.labels(added.stored).inc()
                result["id"] = added.id
                result["uid"] = added.uid
                result["logged"] = True
        finally:
            _settled(done)

    try:
        ctx.store.add_many_async([record for _, record in valid]).add_done_callback(settle)
    except Exception as exc:  # noqa: BLE001 - e.g. the spool could not be written
        log.error("%d prediction(s) not logged: %s: %s", len(valid), type(exc).__name__, exc)
        ctx.metrics.store_failures.inc(len(valid))
        ctx.store.note_write(False)
        ctx.note_unlogged(record.uid for _, record in valid)
        _settled(done)
    return done


def _settled(done: Future) -> None:
    """Mark `done`, unless its waiter already gave up (a client that went away cancels it)."""
    try:
        done.set_result(None)
    except InvalidStateError:
        pass
