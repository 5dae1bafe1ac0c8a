"""Kernel launcher: join the session's cgroups, set limits, drop privileges, then exec.

Run by path with only the standard library (`python -I launch.py [options] -- argv...`), so it
starts fast and works whatever the package's imports cost. It runs in the child process, after
fork and before exec, which is the robust place for rlimits (a `preexec_fn` is unsafe when the
host has threads). Under bubblewrap it runs twice:

    launch.py --parent-pid P --cgroup F ... -- bwrap <view> -- launch.py --uid U --memory-mb ... -- kernel

outside (die with the host, join the cgroups the host made, while the host's files are still
reachable) and inside (rlimits, then the switch to an unprivileged uid, which clears every
capability, and no_new_privs, so no setuid binary can give them back).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
MB = 1024 * 1024


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def die_with_parent(parent_pid: int) -> None:
    """Get SIGKILL when the host dies (Linux), so no kernel outlives it."""
    if not sys.platform.startswith("linux"):
        return
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent_pid and os.getppid() != parent_pid:  # the host died before prctl took effect
        os._exit(1)


def join_cgroup(procs_file: str) -> None:
    """Move this process (and so everything it starts) into a cgroup the host prepared."""
    with open(procs_file, "w") as f:
        f.write(str(os.getpid()))


def set_limit(which: int, value: int) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


PR_CAPBSET_DROP = 24
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def drop_to(uid: int, gid: int) -> None:
    """Become an unprivileged user: no supplementary groups, no capabilities (bounding set
    emptied, then the switch to a non-zero uid clears the rest), nothing inheritable."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(64):  # needs CAP_SETPCAP, which bwrap leaves us for this
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise OSError(f"could not switch to uid {uid}")
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable x 2 words: all zero
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


# seccomp: on x86-64, refuse the system calls a data kernel never needs and kernel exploits
# often start from: new user namespaces (clone/unshare with CLONE_NEWUSER; clone3, whose flags a
# filter cannot read, gets ENOSYS so libc falls back to clone), mounts, namespace entry, keyrings,
# bpf, perf, ptrace, io_uring, userfaultfd, module and kexec loading.
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
AUDIT_ARCH_X86_64 = 0xC000003E
CLONE_NEWUSER = 0x10000000
NR_CLONE, NR_UNSHARE, NR_CLONE3 = 56, 272, 435
DENIED_X86_64 = (101, 155, 165, 166, 175, 176, 246, 248, 249, 250, 298, 304, 308, 313, 320, 321, 323,
                 425, 426, 427)  # ptrace pivot_root mount umount2 init/delete_module kexec_load
# add_key request_key keyctl perf_event_open open_by_handle_at setns finit_module kexec_file_load
# bpf userfaultfd io_uring_setup/enter/register
_RET_ALLOW, _RET_EPERM, _RET_ENOSYS = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38


def seccomp_filter() -> bytes:
    """The BPF program (struct sock_filter[]) for `install_seccomp`."""
    import struct

    def stmt(code: int, k: int) -> tuple[int, int, int, int]:
        return (code, 0, 0, k)

    def jeq(k: int, jt: int, jf: int = 0) -> tuple[int, int, int, int]:
        return (0x15, jt, jf, k)

    prog: list[tuple[int, int, int, int]] = [stmt(0x20, 4), jeq(AUDIT_ARCH_X86_64, 1), stmt(0x06, _RET_ALLOW),
                                             stmt(0x20, 0)]
    tail = [stmt(0x06, _RET_ALLOW), stmt(0x06, _RET_EPERM), stmt(0x06, _RET_ENOSYS),
            stmt(0x20, 16), (0x45, 0, 1, CLONE_NEWUSER), stmt(0x06, _RET_EPERM), stmt(0x06, _RET_ALLOW)]
    checks = [(nr, "eperm") for nr in DENIED_X86_64] + [(NR_CLONE3, "enosys"), (NR_CLONE, "flags"),
                                                        (NR_UNSHARE, "flags")]
    n = len(checks)
    for i, (nr, what) in enumerate(checks):
        # distance from the instruction after this one to the target in `tail`
        to_tail = n - i - 1
        target = {"eperm": 1, "enosys": 2, "flags": 3}[what]
        prog.append(jeq(nr, to_tail + target))
    prog += tail
    return b"".join(struct.pack("HBBI", *ins) for ins in prog)


def install_seccomp() -> None:
    import platform

    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        return
    code = seccomp_filter()
    buf = ctypes.create_string_buffer(code, len(code))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = SockFprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "installing the seccomp filter failed")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="launch.py")
    parser.add_argument("--parent-pid", type=int, default=0)
    parser.add_argument("--cgroup", action="append", default=[], help="a cgroup.procs file to join")
    parser.add_argument("--memory-mb", type=int)
    parser.add_argument("--nproc", type=int)
    parser.add_argument("--fsize-mb", type=int)
    parser.add_argument("--uid", type=int)
    parser.add_argument("--gid", type=int)
    parser.add_argument("--no-new-privs", action="store_true")
    parser.add_argument("--seccomp", action="store_true", help="install the syscall filter (needs --no-new-privs)")
    parser.add_argument("--chdir", help="enter this directory last (as the unprivileged user)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run")
    if args.parent_pid:
        die_with_parent(args.parent_pid)
    for procs in args.cgroup:
        join_cgroup(procs)
    if args.memory_mb:
        set_limit(resource.RLIMIT_AS, args.memory_mb * MB)
    if args.fsize_mb:
        set_limit(resource.RLIMIT_FSIZE, args.fsize_mb * MB)
    if args.uid is not None:
        drop_to(args.uid, args.gid if args.gid is not None else args.uid)
    if args.nproc:  # after the switch: RLIMIT_NPROC counts the processes of the new uid
        set_limit(resource.RLIMIT_NPROC, args.nproc)
    if args.no_new_privs:
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if args.seccomp:
        install_seccomp()
    if args.chdir:
        os.chdir(args.chdir)
    # ipykernel polls JPY_PARENT_PID and exits when its parent looks gone; inside a PID namespace
    # that check misfires. The parent-death signal above does the job instead.
    os.environ.pop("JPY_PARENT_PID", None)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
