"""Running several cooperating Python processes in a test (multi-process JAX runs).

``run_together(commands, ...)`` starts every command at once (each in its own process
group, output to a log file), waits for all of them and returns their logs. It never
hangs: when one process fails, the others (stuck in a collective that will never
complete) get ``grace_s`` to finish and are then killed; after ``timeout_s`` everything
is killed. A failure raises ``AssertionError`` with the status and the last lines of
*every* process's log, so that the cause (usually in the first process that failed) is
visible whichever process reports it.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def free_port() -> int:
  """A TCP port on 127.0.0.1 that is free now (for a JAX coordinator)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _kill_group(proc: subprocess.Popen) -> None:
  if proc.poll() is None:
    try:
      os.killpg(proc.pid, signal.SIGKILL)  # the group this helper created for it
    except ProcessLookupError:
      pass
    proc.wait()


def run_together(commands: Sequence[Sequence[str]], *, cwd: str | os.PathLike,
                 env: Mapping[str, str], log_dir: str | os.PathLike, timeout_s: float = 600,
                 grace_s: float = 20, tail: int = 60) -> list[str]:
  """Runs ``commands`` concurrently; returns their logs (stdout + stderr) in order.

  Raises:
    AssertionError: a process exited with a non-zero status, or the whole run took longer
      than ``timeout_s`` (message: every process's status and log tail).
  """
  log_dir = Path(log_dir)
  log_dir.mkdir(parents=True, exist_ok=True)
  paths = [log_dir / f"process_{i}.log" for i in range(len(commands))]
  procs = []
  for command, path in zip(commands, paths):
    with open(path, "w") as log:
      procs.append(subprocess.Popen(list(command), cwd=cwd, env=dict(env), stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True))
  deadline = time.monotonic() + timeout_s
  failed_at = None
  try:
    while any(p.poll() is None for p in procs):
      now = time.monotonic()
      if failed_at is None and any(p.poll() not in (None, 0) for p in procs):
        failed_at = now
      if now > deadline or (failed_at is not None and now > failed_at + grace_s):
        break
      time.sleep(0.2)
  finally:
    timed_out = any(p.poll() is None for p in procs)
    for proc in procs:
      _kill_group(proc)
  logs = [path.read_text(errors="replace") for path in paths]
  if timed_out or any(p.returncode != 0 for p in procs):
    why = ("timed out after %.0f s" % timeout_s if failed_at is None and timed_out
           else "a process failed")
    report = [f"{len(procs)} processes: {why}"]
    for i, (proc, log) in enumerate(zip(procs, logs)):
      lines = log.splitlines()
      report.append(f"---- process {i}: exit status {proc.returncode}, last {tail} of "
                    f"{len(lines)} lines ({paths[i]}) ----")
      report.extend(lines[-tail:])
    raise AssertionError("\n".join(report))
  return logs
