"""files.pid_alive on real processes: a running one is alive; one killed and not yet reaped (a
zombie) is dead, as is one that is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tournament.files import pid_alive


def test_pid_alive_counts_a_zombie_as_dead():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(proc.pid) and pid_alive(os.getpid())
        os.kill(proc.pid, signal.SIGKILL)
        deadline = time.time() + 10
        while pid_alive(proc.pid) and time.time() < deadline:  # not reaped: a zombie
            time.sleep(0.05)
        assert not pid_alive(proc.pid) and proc.poll() is not None
        assert not pid_alive(proc.pid)  # reaped: gone
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
