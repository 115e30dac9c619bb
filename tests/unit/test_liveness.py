"""A run's process counts as dead only when that is provable from this host; real processes throughout."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from agenix_assets.core.liveness import ALIVE, DEAD, UNKNOWN, boot_id, hostname, process_state


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_running_process_is_alive_and_a_killed_one_dead_even_before_it_is_reaped():
    proc = sleeper()
    since = time.time()
    try:
        assert process_state(proc.pid, hostname(), boot_id(), since).state == ALIVE
        proc.send_signal(signal.SIGKILL)
        time.sleep(0.5)  # not reaped yet: a zombie still has its pid
        zombie = process_state(proc.pid, hostname(), boot_id(), since)
        assert zombie.state == DEAD and "zombie" in zombie.reason
        proc.wait()
        assert process_state(proc.pid, hostname(), boot_id(), since).state == DEAD
    finally:
        proc.kill()
        proc.wait()


def test_a_pid_now_held_by_a_younger_process_means_the_run_process_is_dead():
    proc = sleeper()
    try:
        # The run logged this pid an hour before this process started: the pid was reused.
        found = process_state(proc.pid, hostname(), boot_id(), time.time() - 3600)
        assert found.state == DEAD and "started after the run" in found.reason
    finally:
        proc.kill()
        proc.wait()


def test_other_hosts_missing_records_stay_unknown_and_a_reboot_means_dead():
    proc = sleeper()
    try:
        assert process_state(proc.pid, "some-other-host", boot_id(), time.time()).state == UNKNOWN
        assert process_state(proc.pid, None, None, time.time()).state == UNKNOWN
        assert process_state(None, hostname(), boot_id(), time.time()).state == UNKNOWN
        if boot_id() is not None:
            assert process_state(proc.pid, hostname(), "an-earlier-boot", time.time()).state == DEAD
    finally:
        proc.kill()
        proc.wait()
