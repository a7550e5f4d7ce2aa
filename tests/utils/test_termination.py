"""SIGTERM stops a script the way Ctrl-C does: its cleanup runs, and the cold-start pipeline's
running stage (a child process) stops with it instead of running on for an hour."""

import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import termios
import textwrap
import time

from process_utils import COLD_START_DRIVER, ROOT, is_running, start, wait_for
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


_DRIVER = COLD_START_DRIVER + """
run = Path(sys.argv[1])
script.Stages(run).run("sleepy", [sys.executable, "-c", sys.argv[2]], run / "sleepy.log")
"""


def _stage(tmp_path) -> str:
    """A stage that waits 120 s. It writes its pid when ready, one line per SIGINT it receives,
    and in its cleanup the name of the stop it got, then lingers 1 s so that a second signal
    would be counted."""
    return textwrap.dedent(f"""
        import os, signal, time
        from verl.utils.termination import exit_on_sigterm
        def on_sigint(signum, frame):
            open({str(tmp_path / "sigints")!r}, "a").write("SIGINT\\n")
            raise KeyboardInterrupt
        signal.signal(signal.SIGINT, on_sigint)
        exit_on_sigterm()  # as main_ppo's driver (Ray's handler) and the demo collector do
        open({str(tmp_path / "child.pid")!r}, "w").write(str(os.getpid()))
        try:
            time.sleep(120)
        except BaseException as stop:  # the stage's own cleanup runs
            open({str(tmp_path / "interrupted")!r}, "w").write(type(stop).__name__)
            signal.signal(signal.SIGINT, lambda *_: open({str(tmp_path / "sigints")!r}, "a").write("SIGINT\\n"))
            time.sleep(1)
            raise
    """)


def _start_a_cold_start_stage(tmp_path):
    """The cold-start script's Stages.run under exit_on_sigterm (as its __main__ block installs it),
    running `_stage`. In its own session: no controlling terminal, as under nohup. Returns the
    script's process and the stage's pid."""
    proc = start(_DRIVER, str(tmp_path), _stage(tmp_path), new_session=True)
    wait_for(tmp_path / "child.pid", proc)
    return proc, int((tmp_path / "child.pid").read_text())


def _assert_stopped_not_done(tmp_path, out):
    assert "sleepy: stopped the stage" in out
    # a stopped stage is not done (the next run redoes it), and the time it ran is kept
    record = json.loads((tmp_path / "stages.json").read_text())["sleepy"]
    assert not record["completed"] and record["runs"][0]["wall_s"] > 0


def test_sigterm_to_the_cold_start_script_stops_its_running_stage(tmp_path):
    """The stage gets SIGTERM (its own cleanup runs), the script exits 143, and the stage is recorded
    as stopped, not done."""
    proc, pid = _start_a_cold_start_stage(tmp_path)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out
    assert not is_running(pid)
    assert (tmp_path / "interrupted").read_text() == "SystemExit"  # stopped, not killed
    _assert_stopped_not_done(tmp_path, out)


def test_sigint_to_the_cold_start_script_alone_reaches_its_stage(tmp_path):
    """`kill -INT <script>` (no terminal to signal the whole group): the script passes the Ctrl-C on,
    so the stage stops gracefully at once. Before, the stage never heard of it and was SIGKILLed
    after the 30 s grace, which left a training stage's Ray agents running."""
    proc, pid = _start_a_cold_start_stage(tmp_path)
    start_s = time.time()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0, out
    assert not is_running(pid)
    assert (tmp_path / "interrupted").read_text() == "KeyboardInterrupt", out  # the stage's cleanup ran
    assert (tmp_path / "sigints").read_text().count("SIGINT") == 1
    assert time.time() - start_s < 20  # not the 30 s grace then SIGKILL
    _assert_stopped_not_done(tmp_path, out)


def test_ctrl_c_in_a_terminal_reaches_the_stage_once(tmp_path):
    """Ctrl-C typed in the script's terminal (a real pseudo-terminal here): the terminal signals the
    whole foreground group, so the script must not send the stage a second SIGINT, which would
    cut the stage's own cleanup short."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-c", _DRIVER, str(tmp_path), _stage(tmp_path)], cwd=ROOT,
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))  # the pty is its terminal
    os.close(slave)
    deadline = time.time() + 60
    while not (tmp_path / "child.pid").is_file() or not (tmp_path / "child.pid").read_text():
        assert proc.poll() is None and time.time() < deadline, _drain(master)
        time.sleep(0.1)
    os.write(master, b"\x03")  # Ctrl-C
    proc.wait(timeout=60)
    out = _drain(master)
    assert proc.returncode != 0, out
    assert (tmp_path / "interrupted").read_text() == "KeyboardInterrupt", out
    assert (tmp_path / "sigints").read_text().count("SIGINT") == 1, out
    _assert_stopped_not_done(tmp_path, out)


def _drain(master: int) -> str:
    """What a pty's processes wrote, once they have ended."""
    chunks = []
    while select.select([master], [], [], 0.1)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer has closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return b"".join(chunks).decode(errors="replace")


def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period():
    child = subprocess.Popen([sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, "
                              "signal.SIG_IGN); print('ready', flush=True); time.sleep(120)"],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    start_s = time.time()
    stop_child(child, interrupted_by_ctrl_c=False, grace_s=1.0)
    assert child.returncode == -signal.SIGKILL
    assert time.time() - start_s < 10
