"""Process checks shared by tests in several folders (tests/ is on sys.path through its conftest)."""

import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The start of a `python -c` program that drives the cold-start script's stages as its __main__ does:
# the script loaded as module `script`, SIGTERM turned into SystemExit. Append the stages to run.
# SIGINT raises KeyboardInterrupt as in a script started from a shell prompt: the tests may run as a
# background job (`.ci/run &`), whose children inherit SIGINT ignored.
COLD_START_DRIVER = """
import importlib.util, signal, sys
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)
spec = importlib.util.spec_from_file_location("cold_start_libero", "scripts/cold_start_libero.py")
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)
script.exit_on_sigterm()
"""


def start(code: str, *args: str, new_session: bool = False) -> subprocess.Popen:
    """`python -c code args...` from the repository root, stdout and stderr together as text.
    `new_session`: without a controlling terminal, as under nohup or a job runner, even when the
    tests run in one."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=new_session)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until `proc` has written `path` (non-empty); fails with its output if it ends first."""
    deadline = time.time() + timeout
    while not path.is_file() or not path.read_text().strip():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, f"{path} not written"
        time.sleep(0.1)


def is_running(pid: int) -> bool:
    """The process exists and has not ended: a zombie has ended, only its parent's wait is missing."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
