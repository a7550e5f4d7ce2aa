"""Process checks shared by tests in several folders (tests/ is on sys.path through its conftest)."""

from pathlib import Path


def is_running(pid: int) -> bool:
    """The process exists and has not ended: a zombie has ended, only its parent's wait is missing."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
