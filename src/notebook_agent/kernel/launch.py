"""Kernel launcher: set resource limits and a parent-death signal, then exec the kernel.

Run by path with only the standard library (`python -I launch.py [options] -- argv...`), so it
starts fast and works whatever the package's imports cost. It runs in the child process, after
fork and before exec, which is the robust place for rlimits (a `preexec_fn` is unsafe when the
host has threads).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import signal
import sys

PR_SET_PDEATHSIG = 1
MB = 1024 * 1024


def die_with_parent(parent_pid: int) -> None:
    """Get SIGKILL when the host dies (Linux), so no kernel outlives it."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if parent_pid and os.getppid() != parent_pid:  # the host died before prctl took effect
        os._exit(1)


def set_limit(which: int, value: int) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="launch.py")
    parser.add_argument("--parent-pid", type=int, default=0)
    parser.add_argument("--memory-mb", type=int)
    parser.add_argument("--nproc", type=int)
    parser.add_argument("--fsize-mb", type=int)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run")
    die_with_parent(args.parent_pid)
    if args.memory_mb:
        set_limit(resource.RLIMIT_AS, args.memory_mb * MB)
    if args.nproc:
        set_limit(resource.RLIMIT_NPROC, args.nproc)
    if args.fsize_mb:
        set_limit(resource.RLIMIT_FSIZE, args.fsize_mb * MB)
    # ipykernel polls JPY_PARENT_PID and exits when its parent looks gone; inside a PID namespace
    # that check misfires. The parent-death signal above does the job instead.
    os.environ.pop("JPY_PARENT_PID", None)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
