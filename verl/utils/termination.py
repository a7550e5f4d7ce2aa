"""Stopping on SIGTERM as Ctrl-C stops, child processes included.

Schedulers and people stop jobs with SIGTERM (`kill`, SLURM's scancel, Kubernetes). Its default
action ends Python at once: no `finally`, no `with` exit, so a script's children (a pipeline
stage, a multiprocessing Pool's workers) outlive it and keep the machine busy for hours.
"""

from __future__ import annotations

import signal
import subprocess

SIGTERM_EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM


def exit_on_sigterm() -> None:
    """From now on SIGTERM raises SystemExit(143) in the main thread, so cleanup runs as after
    Ctrl-C. A second SIGTERM during that cleanup ends the process at once. Main thread only."""

    def handler(signum: int, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise SystemExit(SIGTERM_EXIT_CODE)

    signal.signal(signal.SIGTERM, handler)


def stop_child(proc: subprocess.Popen, interrupted_by_ctrl_c: bool, grace_s: float = 30.0) -> None:
    """Stop a child whose parent is leaving early, then SIGKILL it after `grace_s`. After Ctrl-C
    the terminal has already sent the child its SIGINT; otherwise it gets SIGTERM, which a
    background job keeps (`cmd &` from a script ignores SIGINT), and a graceful stop where the child
    handles it: `main_ppo`/`main_sft` stop their workers (Ray's driver turns SIGTERM into
    SystemExit), the demo collector its Pool (exit_on_sigterm)."""
    if proc.poll() is not None:
        return
    if not interrupted_by_ctrl_c:
        proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
