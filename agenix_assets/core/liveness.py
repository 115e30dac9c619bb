"""Whether a process recorded on some host is provably dead, as seen from this host.

Used to free the concurrency slots of runs whose process was killed (kill -9, OOM): such a run stays STARTED
and keeps its slot forever. "Provably dead" is deliberately narrow; anything else is "unknown" and is left
alone:
- the process ran on this host (same hostname) and the host has not rebooted since (same boot id), and no
  process has its pid, or the one that has it is a zombie (exited, not yet reaped), or it started after the
  run did (the pid was reused);
- or the process ran on this host before its last reboot (the boot id changed): nothing of that boot survives.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

ALIVE, DEAD, UNKNOWN = "alive", "dead", "unknown"
# /proc/<pid>/stat start times have clock-tick resolution; allow for that and for clock rounding.
_START_SLACK_S = 2.0


def hostname() -> str:
    return socket.gethostname()


def boot_id() -> str | None:
    """This boot's random id (Linux); None where the kernel does not expose one."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class ProcessState:
    state: str  # ALIVE, DEAD or UNKNOWN
    reason: str


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its closing parenthesis.
    return raw[raw.rindex(")") + 2 :].split()


def _process_started_at(fields: list[str]) -> float | None:
    """Unix time the process started, from its start time in clock ticks since boot (field 22)."""
    try:
        ticks = int(fields[19])
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def process_state(pid: int | None, host: str | None, boot: str | None, running_since: float | None) -> ProcessState:
    """State of process ``pid`` that ran on ``host`` (boot id ``boot``) and was running at unix time
    ``running_since`` (e.g. when the run logged its pid)."""
    if not host:
        return ProcessState(UNKNOWN, "the run did not record its host")
    if host != hostname():
        return ProcessState(UNKNOWN, f"it runs on host {host}, not this one")
    current_boot = boot_id()
    if boot and current_boot and boot != current_boot:
        return ProcessState(DEAD, f"host {host} rebooted since the run started")
    if pid is None:
        return ProcessState(UNKNOWN, "the run did not log its process id")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return ProcessState(DEAD, f"no process {pid} on {host}")
    except PermissionError:
        pass  # exists, owned by another user
    fields = _stat_fields(pid)
    if fields is None:
        return ProcessState(ALIVE, f"process {pid} is running on {host}")
    if fields[0] in ("Z", "X"):
        return ProcessState(DEAD, f"process {pid} on {host} has exited (zombie)")
    started = _process_started_at(fields)
    if started is not None and running_since is not None and started > running_since + _START_SLACK_S:
        return ProcessState(DEAD, f"pid {pid} on {host} now belongs to a process started after the run")
    return ProcessState(ALIVE, f"process {pid} is running on {host}")
