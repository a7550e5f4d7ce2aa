"""Stopping on SIGTERM as Ctrl-C stops, child processes included.

Schedulers and people stop jobs with SIGTERM (`kill`, SLURM's scancel, Kubernetes). Its default
action ends Python at once: no `finally`, no `with` exit, so a script's children (a pipeline
stage, a multiprocessing Pool's workers) outlive it and keep the machine busy for hours.
"""

from __future__ import annotations

import os
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
    """Stop a child whose parent is leaving early, then SIGKILL it after `grace_s`. A Ctrl-C typed
    in the terminal has already reached the child (the terminal signals its whole foreground
    process group); a SIGINT sent to the parent alone (`kill -INT`, a job runner) has not, so the
    child gets it from here. Otherwise SIGTERM, which a background job keeps (`cmd &` from a
    script ignores SIGINT). Each is a graceful stop where the child handles it: `main_ppo` and
    `main_sft` stop their workers and Ray (its driver turns SIGTERM into SystemExit), the demo
    collector its Pool (exit_on_sigterm). A child SIGKILLed instead leaves Ray's agents behind."""
    if proc.poll() is not None:
        return
    if not interrupted_by_ctrl_c:
        proc.terminate()
    elif not _terminal_interrupted(proc.pid):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _terminal_interrupted(pid: int) -> bool:
    """Whether a Ctrl-C typed in our controlling terminal reached process `pid`: it is in the
    terminal's foreground process group. False without a controlling terminal (nohup, cron, CI)."""
    try:
        tty = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:  # ENXIO: no controlling terminal
        return False
    try:
        return os.tcgetpgrp(tty) == os.getpgid(pid)
    except OSError:  # the child is gone, or the terminal went away
        return False
    finally:
        os.close(tty)
