"""SIGTERM stops a script the way Ctrl-C does: its cleanup runs, and the cold-start pipeline's
running stage (a child process) stops with it instead of running on for an hour."""

import json
import signal
import subprocess
import sys
import textwrap
import time

from process_utils import is_running, start, wait_for
from verl.utils.termination import SIGTERM_EXIT_CODE, stop_child


def test_sigterm_runs_the_cleanup_and_exits_143(tmp_path):
    ready = tmp_path / "ready"
    proc = start("""
        import sys, time
        from pathlib import Path
        from verl.utils.termination import exit_on_sigterm
        exit_on_sigterm()
        Path(sys.argv[1]).write_text("1")
        try:
            time.sleep(120)
        finally:
            print("cleaned up", flush=True)
    """, str(ready))
    wait_for(ready, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == SIGTERM_EXIT_CODE == 143
    assert "cleaned up" in out


def test_sigterm_to_the_cold_start_script_stops_its_running_stage(tmp_path):
    """Stages.run under exit_on_sigterm (as the script's __main__ block installs it): the stage gets SIGTERM
    (its own cleanup runs), the script exits 143, and the stage is recorded as stopped, not done."""
    child_pid, interrupted = tmp_path / "child.pid", tmp_path / "interrupted"
    stage = textwrap.dedent(f"""
        import os, time
        from verl.utils.termination import exit_on_sigterm
        exit_on_sigterm()  # as main_ppo's driver (Ray's handler) and the demo collector do
        open({str(child_pid)!r}, "w").write(str(os.getpid()))
        try:
            time.sleep(120)
        finally:  # the stage's own cleanup runs
            open({str(interrupted)!r}, "w").write("1")
    """)
    proc = start("""
        import importlib.util, sys
        from pathlib import Path
        spec = importlib.util.spec_from_file_location("cold_start_libero", "scripts/cold_start_libero.py")
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
        script.exit_on_sigterm()
        run = Path(sys.argv[1])
        script.Stages(run).run("sleepy", [sys.executable, "-c", sys.argv[2]], run / "sleepy.log")
    """, str(tmp_path), stage)
    wait_for(child_pid, proc)
    pid = int(child_pid.read_text())
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out
    assert "sleepy: stopped the stage" in out
    assert not is_running(pid)
    assert interrupted.is_file()  # stopped, not killed
    # a stopped stage is not done (the next run redoes it), and the time it ran is kept
    record = json.loads((tmp_path / "stages.json").read_text())["sleepy"]
    assert not record["completed"] and record["runs"][0]["wall_s"] > 0


def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period():
    child = subprocess.Popen([sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, "
                              "signal.SIG_IGN); print('ready', flush=True); time.sleep(120)"],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    start_s = time.time()
    stop_child(child, interrupted_by_ctrl_c=False, grace_s=1.0)
    assert child.returncode == -signal.SIGKILL
    assert time.time() - start_s < 10
