"""Child processes of `digitlab run`: started in their own process group (grandchildren included),
killed with the runner if it dies, stopped gently then firmly, and described when they exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

#: Seconds between SIGTERM and SIGKILL; the whole stop stays under STOP_TIMEOUT.
STOP_GRACE = 3.0


STOP_TIMEOUT = 5.0


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    term_group: bool = True  # False: the child passes SIGTERM on to its own children (digitlab ui)
    terminated: bool = False  # SIGTERM sent
    started: float = field(default_factory=time.monotonic)

    @property
    def pgid(self) -> int:
        return self.proc.pid  # start_new_session: the child leads its own session and process group

    def running(self) -> bool:
        return self.proc.poll() is None


def _prctl():
    """libc's prctl on Linux (loaded in the parent: nothing is imported between fork and exec)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a forked worker: be killed when the process that forked it dies (even by SIGKILL), so a killed
    run leaves no orphan that keeps computing or keeps its locks and database sessions open."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


@contextmanager
def fork_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A fork-based process pool (workers inherit the parent's arrays without copies) whose workers die
    with the parent. Left by an exception (SIGTERM's SystemExit, Ctrl-C, a failed model), its workers are
    killed at once: a plain `with ProcessPoolExecutor` waits for their fits, minutes on full data."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("fork"), initializer=die_with_parent
    )
    try:
        yield pool
    except BaseException:
        # the thread that feeds tasks to the workers may be stuck writing a big one into a pipe nobody
        # reads any more, and Python waits for that thread at exit: the run never ended (CPython gh-107219)
        pool._call_queue.cancel_join_thread()
        for proc in list((pool._processes or {}).values()):  # (3.14 has pool.kill_workers())
            proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _child_setup(background: bool):
    """Runs in each child between fork and exec: SIGTERM it if this runner dies without stopping it
    (even by SIGKILL), and give training a lower CPU priority than the servers."""

    def setup() -> None:  # pragma: no cover - runs in the forked child
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if background:
            try:
                os.nice(10)
            except OSError:
                pass

    return setup


def start_child(
    name: str, argv: list[str], env: dict[str, str], *, background: bool = False, term_group: bool = True
) -> Child:
    proc = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches only us; we stop each group ourselves, grandchildren included
        preexec_fn=_child_setup(background),  # noqa: PLW1509 - no threads in this process
    )
    return Child(name, proc, term_group)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`."""
    members = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                members.append(proc.pid)
        except (psutil.Error, ProcessLookupError, PermissionError):  # gone meanwhile, or not ours to see
            continue
    return members


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def terminate(children: list[Child]) -> None:
    """First step of a stop: SIGTERM to each child not signalled yet (`term_group`: its whole group)."""
    for child in children:
        if child.terminated:
            continue
        child.terminated = True
        if child.term_group:
            _signal_group(child.pgid, signal.SIGTERM)
        elif child.running():
            child.proc.send_signal(signal.SIGTERM)  # it forwards the signal itself (digitlab ui)


def stop_children(
    children: list[Child],
    *,
    since: float | None = None,
    grace: float = STOP_GRACE,
    timeout: float = STOP_TIMEOUT,
) -> list[str]:
    """Stop every child with its whole process group; returns the names that needed SIGKILL.

    SIGTERM first (see `terminate`; `since` is when that began, if it already did); a second later, to
    whatever is left of each group; after `grace`, SIGKILL. Direct children are reaped (no zombie)."""
    started = time.monotonic() if since is None else since
    terminate(children)
    escalated = False
    killed: list[str] = []
    while True:
        for child in children:
            child.proc.poll()
        alive = [c for c in children if c.running() or group_members(c.pgid)]
        if not alive:
            return killed
        elapsed = time.monotonic() - started
        if elapsed >= 1.0 and not escalated:
            escalated = True
            for child in alive:
                if not child.term_group:
                    _signal_group(child.pgid, signal.SIGTERM)
        if elapsed >= grace and not killed:
            for child in alive:
                killed.append(child.name)
                _signal_group(child.pgid, signal.SIGKILL)
        if elapsed >= timeout:
            return killed
        time.sleep(0.05)


def stray_groups(children: list[Child]) -> list[int]:
    """Process groups of the children's descendants that left their child's group: a learning run the API
    starts in a session of its own (it outlives a worker) outlived `digitlab run`'s Ctrl-C, training on."""
    groups: set[int] = set()
    for child in children:
        try:
            descendants = psutil.Process(child.proc.pid).children(recursive=True)
        except psutil.Error:
            continue
        for proc in descendants:
            try:
                pgid = os.getpgid(proc.pid)
            except OSError:
                continue
            if pgid != child.pgid:
                groups.add(pgid)
    return sorted(groups)


def stop_groups(pgids: list[int], grace: float = STOP_GRACE) -> None:
    """SIGTERM each process group, SIGKILL what is left of them after `grace` seconds."""
    for pgid in pgids:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(group_members(pgid) for pgid in pgids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pgid in pgids:
        if group_members(pgid):
            _signal_group(pgid, signal.SIGKILL)


def clear_group(child: Child, timeout: float = 2.0) -> None:
    """SIGKILL whatever is left of a dead child's process group (uvicorn workers outlive their parent
    and keep the port), and wait until the group is gone or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while group_members(child.pgid) and time.monotonic() < deadline:
        _signal_group(child.pgid, signal.SIGKILL)
        time.sleep(0.05)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
