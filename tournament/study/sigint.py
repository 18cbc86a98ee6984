"""Ctrl-C in a sweep worker: noted by the sweep itself, and held back while the worker is inside
Optuna's journal file lock. Both guard the promise that an interrupted trial is FAIL
("interrupted") and queued again for the resume, whatever the signal hits."""

from __future__ import annotations

import threading
from contextlib import contextmanager


@contextmanager
def noting_sigint():
    """The first SIGINT as Python's default handler raises it (KeyboardInterrupt), also noted in
    the event it yields: a library that catches the KeyboardInterrupt and raises something else
    still leaves the trial "interrupted" and queued again for the resume (seen: Optuna's journal
    file lock, hit by Ctrl-C while it waited, raised FileNotFoundError instead). Later SIGINTs are
    ignored: they would cut that FAIL + enqueue short (seen: `--gpus` workers get the terminal's
    Ctrl-C and then the launcher's SIGINT, and an interrupted trial was never queued again)."""
    import signal

    seen = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield seen  # only the main thread may set handlers (and receives the signal)
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if previous is signal.SIG_IGN or seen.is_set():
            # the first Ctrl-C is being handled: a second one (the terminal's and then the `--gpus`
            # launcher's, say) must not cut short the FAIL + enqueue of the running trial; the
            # launcher's SIGTERM after its grace period still stops a worker that hangs
            return
        seen.set()
        if _HELD["depth"]:  # inside a storage lock (hold_sigint): raised when it is let go
            _HELD["pending"] = True
            return
        if callable(previous):  # Python's own handler raises KeyboardInterrupt; another does what it did
            previous(signum, frame)
            return
        raise KeyboardInterrupt  # SIG_DFL: what Python's default handler would have done

    signal.signal(signal.SIGINT, handler)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)


_HELD = {"depth": 0, "pending": False}  # the main thread's hold on Ctrl-C (hold_sigint)


def hold_sigint() -> None:
    """Hold a Ctrl-C back (under noting_sigint) until the matching `let_sigint_go`, which raises it
    as KeyboardInterrupt. For Optuna's journal file lock (optuna_storage.py): interrupted while it
    waits, Optuna 5.1 removes the lock another worker holds, and two workers then append to the
    journal at once (seen: a trial queued again for the resume was lost)."""
    if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
        _HELD["depth"] += 1


def let_sigint_go() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    _HELD["depth"] -= 1
    if not _HELD["depth"] and _HELD["pending"]:
        _HELD["pending"] = False
        raise KeyboardInterrupt
