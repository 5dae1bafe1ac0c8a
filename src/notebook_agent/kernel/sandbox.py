"""How a kernel process is confined: its environment, its view of the files, its privileges.

The host builds one command line, `sandbox_command(...)`. With bubblewrap:

    python -I launch.py --parent-pid P --cgroup F --
        bwrap <a view built up from nothing> --
        python -I launch.py --uid U --memory-mb .. --nproc .. --fsize-mb .. --no-new-privs -- <kernel argv>

The view holds the system's programs and libraries (/usr and its links, a few files of /etc),
the interpreter with its libraries and this package, all read-only; the task's working
directory (and the few directories `SandboxPaths` names) writable; a private /tmp and /dev/shm
of capped size; a fresh /proc with /proc/sys read-only; nothing else of the host: no home, no
/root, /run, /var, /srv, /mnt, no checkout, no benchmark files, no host sockets. The kernel gets
its own PID, IPC, UTS and network namespaces (no network unless `Limits.network`) and a new
session. It runs as an unprivileged user with no capabilities: on a root host, bubblewrap keeps
only CAP_SETUID, CAP_SETGID and CAP_SETPCAP, and the inner launcher switches to a fresh uid
of its own after emptying the bounding set (which clears them all) before anything of the kernel runs; on a non-root host,
bubblewrap makes a user namespace and drops every capability. Either way no further user
namespaces can be made (on a root host, because an unprivileged uid has no CAP_SYS_ADMIN to
remount anything, and the bind mounts are locked) and no_new_privs holds. On x86-64 a seccomp
filter (`launch.py`) also refuses, with or without bubblewrap, the system calls a data kernel
never needs: new user namespaces, mounts, namespace entry, keyrings, bpf, perf, ptrace,
io_uring, userfaultfd, module and kexec loading.

Without bubblewrap (sandbox "off", or "auto" where it cannot run) the kernel still gets the
scrubbed environment, the rlimits, the cgroup caps where the host allows them, and the
session's watchdog, but sees the host's files and network with the host user's rights.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from .base import SANDBOX_MODES, KernelError, Limits, SandboxMode

log = logging.getLogger(__name__)

LAUNCHER = Path(__file__).with_name("launch.py")
PACKAGE_DIR = Path(__file__).resolve().parents[1]

# Variables passed through from the host when set. Everything else is dropped: credentials
# (OPENAI_API_KEY, *_TOKEN, AWS_*, HF_*, ...) never reach user code.
ENV_ALLOWLIST = ("LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_NUMERIC", "LC_TIME",
                 "LC_COLLATE", "LC_MESSAGES", "TZ", "TERM", "PYTHONHASHSEED", "SOURCE_DATE_EPOCH")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "NUMEXPR_MAX_THREADS", "VECLIB_MAXIMUM_THREADS",
               "BLIS_NUM_THREADS", "RAYON_NUM_THREADS", "POLARS_MAX_THREADS", "TF_NUM_INTRAOP_THREADS",
               "TF_NUM_INTEROP_THREADS")
# Headless and inline: figures become PNG outputs (plain "Agg" would drop them).
MPL_BACKEND = "module://matplotlib_inline.backend_inline"
SANDBOX_USER = "sandbox"
# On a root host each sandbox runs as its own unprivileged uid, drawn from this range (no
# passwd entry on the host; the sandbox gets one of its own).
UID_BASE, UID_SPAN = 1_900_000_000, 1 << 24
# The system, read-only: where these are links (merged /usr) the link is recreated instead.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Of /etc, only what programs and libraries need to run; never passwd, shadow or the host's
# configuration. passwd and group are written for the sandbox.
ETC_ENTRIES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "fonts",
               "ssl", "ca-certificates", "ca-certificates.conf", "pki", "crypto-policies",
               "alternatives", "mime.types", "nsswitch.conf", "host.conf", "hosts", "gai.conf",
               "protocols", "services", "locale.alias", "locale.conf", "os-release")
NETWORK_ETC = ("resolv.conf",)
# Inside the sandbox: where caches go (in the private /tmp) and where read-only host files appear.
SCRATCH = "/tmp/.kernel"
RUN_DIR = "/run/notebook-agent"


@dataclass
class SandboxPaths:
    """What a kernel may touch besides the system: its working dir, other writable dirs, and
    host files shown read-only (host path -> path inside)."""

    workdir: Path
    writable: list[Path] = field(default_factory=list)
    read_only: dict[Path, str] = field(default_factory=dict)


@dataclass
class Confinement:
    """How one kernel is confined, decided by the host at start and recorded with the run."""

    mode: SandboxMode
    bwrap: str | None = None
    uid: int | None = None            # the host uid the kernel runs as, when we switch it
    cgroup: str | None = None         # "cgroup v1" / "cgroup v2", or None (rlimits + watchdog)

    @property
    def isolated(self) -> bool:
        return self.bwrap is not None

    def describe(self) -> dict[str, object]:
        view = ("built-up read-only view: system, interpreter, package; writable working dir; "
                "private /tmp; no network" if self.isolated else "host filesystem and network visible")
        return {"isolated": self.isolated, "mode": self.mode,
                "filesystem": view,
                "user": (f"uid {self.uid}, no capabilities" if self.uid is not None else
                         "user namespace, no capabilities" if self.isolated else "the host's user"),
                "caps": self.cgroup or "rlimits + watchdog"}


def kernel_env(workdir: Path, scratch: Path | str, limits: Limits,
               extra: Mapping[str, str] | None = None, host_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The scrubbed environment a kernel sees: an allow-list of the host's, plus our settings."""
    host_env = os.environ if host_env is None else host_env
    env = {k: host_env[k] for k in ENV_ALLOWLIST if k in host_env}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"])
    env.setdefault("LANG", "C.UTF-8")
    threads = str(max(1, limits.cpu_threads))
    env.update({name: threads for name in THREAD_VARS})
    scratch = str(scratch)
    env.update({
        "HOME": str(workdir),
        "PWD": str(workdir),
        "USER": SANDBOX_USER,
        "LOGNAME": SANDBOX_USER,
        "TMPDIR": "/tmp",
        "MPLBACKEND": MPL_BACKEND,
        # pandas 3 keeps strings in Arrow when pyarrow is installed, and Arrow's default
        # allocator (mimalloc) reserves ~1 GiB of address space up front: under the RLIMIT_AS
        # memory limit that alone made a small CSV plus a plot failed. The system allocator
        # reserves only what it uses.
        "ARROW_DEFAULT_MEMORY_POOL": "system",
        "MPLCONFIGDIR": f"{scratch}/mpl",
        "IPYTHONDIR": f"{scratch}/ipython",
        "JUPYTER_CONFIG_DIR": f"{scratch}/jupyter",
        "JUPYTER_DATA_DIR": f"{scratch}/jupyter",
        "JUPYTER_RUNTIME_DIR": f"{scratch}/jupyter",
        "XDG_CACHE_HOME": f"{scratch}/cache",
        "JUPYTER_PLATFORM_DIRS": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "NOTEBOOK_AGENT_KERNEL": "1",
    })
    if extra:
        env.update(extra)
    return env


@functools.lru_cache(maxsize=1)
def matplotlib_cache() -> Path | None:
    """A host-side matplotlib font list built once (about 0.4 s), shown read-only to kernels."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "notebook-agent" / "mpl"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not any(root.glob("fontlist-*.json")):
            subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"], timeout=120,
                           env={**kernel_env(root, root, Limits()), "MPLCONFIGDIR": str(root)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        found = sorted(root.glob("fontlist-*.json"))
        return found[-1] if found else None
    except (OSError, subprocess.SubprocessError) as exc:  # a cache is an optimisation only
        log.debug("no matplotlib font cache: %s", exc)
        return None


def private_dir(prefix: str) -> Path:
    """A fresh host directory only the host's user can enter (for files the kernel must not write)."""
    return Path(tempfile.mkdtemp(prefix=prefix)).resolve()


def sandbox_uid() -> int | None:
    """A fresh unprivileged uid for a kernel when the host is root; None otherwise (the kernel
    keeps the host user's uid, inside a user namespace)."""
    return UID_BASE + secrets.randbelow(UID_SPAN) if os.geteuid() == 0 else None


def write_identity(run_dir: Path, uid: int, workdir: Path) -> dict[Path, str]:
    """passwd and group files naming the sandbox's user; host path -> path inside."""
    gid = uid
    (run_dir / "passwd").write_text(f"root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
                                    f"{SANDBOX_USER}:x:{uid}:{gid}:{SANDBOX_USER}:{workdir}:/bin/sh\n"
                                    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
    (run_dir / "group").write_text(f"root:x:0:\n{SANDBOX_USER}:x:{gid}:\nnogroup:x:65534:\n")
    return {run_dir / "passwd": "/etc/passwd", run_dir / "group": "/etc/group"}


# -- bubblewrap ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def bwrap_path() -> str | None:
    """The bubblewrap binary when it is installed *and* can build our sandbox here.

    Containers often forbid the namespaces bubblewrap needs; then "auto" falls back (warning once).
    """
    exe = shutil.which("bwrap")
    if exe is None:
        log.warning("bubblewrap (bwrap) not found: kernels run WITHOUT isolation: they can read and "
                    "write the host's files and reach the network (apt-get install bubblewrap)")
        return None
    work = private_dir("na-probe-")
    try:
        uid = sandbox_uid()
        paths = SandboxPaths(workdir=work)
        if uid is not None:
            os.chown(work, uid, uid)
            paths.read_only.update(write_identity(work, uid, work))
        argv = [sys.executable, "-I", "-c", "import os; open('ok', 'w').write(str(os.getuid()))"]
        cmd = inner_launcher(Limits(), uid, argv, work)
        res = subprocess.run(bwrap_args(exe, paths, Limits(), privileged=uid is not None) + cmd,
                             capture_output=True, timeout=30, check=False)
        if res.returncode != 0 or not (work / "ok").exists():
            raise OSError(res.stderr.decode(errors="replace").strip() or f"exit code {res.returncode}")
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("bubblewrap cannot build a sandbox here (%s): kernels run WITHOUT isolation", exc)
        return None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return exe


def use_bwrap(mode: SandboxMode) -> str | None:
    """Resolve the sandbox mode: "auto" = when available, "require" = or fail, "off" = never."""
    if mode not in SANDBOX_MODES:
        raise ValueError(f"unknown sandbox mode {mode!r}: use one of {', '.join(SANDBOX_MODES)}")
    if mode == "off":
        return None
    exe = bwrap_path()
    if exe is None and mode == "require":
        raise KernelError("sandbox 'require': bubblewrap is not installed or cannot create a "
                          "sandbox here (try: apt-get install bubblewrap, or --sandbox off)")
    return exe


def code_roots() -> list[Path]:
    """The interpreter's prefixes and this package's directory, outermost only."""
    candidates = {sys.prefix, sys.exec_prefix, sys.base_prefix, str(PACKAGE_DIR)}
    found = {Path(c).resolve() for c in candidates if c and Path(c).exists()}
    found = {p for p in found if p != Path("/")}
    return sorted(p for p in found if not any(q != p and _inside(p, q) for q in found))


def _inside(child: Path, parent: Path) -> bool:
    try:
        Path(child).resolve().relative_to(Path(parent).resolve())
        return True
    except ValueError:
        return False


def bwrap_args(exe: str, paths: SandboxPaths, limits: Limits, *, privileged: bool) -> list[str]:
    """bubblewrap's arguments: the view, the namespaces and the privileges (see the module doc)."""
    args = [exe, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--new-session", "--die-with-parent", "--hostname", "sandbox"]
    if privileged:  # the inner launcher switches uid, which needs these two and clears them
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                 "--cap-add", "CAP_SETPCAP"]
    else:
        args += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
    if not limits.network:
        args.append("--unshare-net")
    for d in SYSTEM_DIRS:
        p = Path(d)
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), d]
        elif p.is_dir():
            args += ["--ro-bind", d, d]
    args += ["--perms", "0755", "--dir", "/etc"]
    for name in ETC_ENTRIES + (NETWORK_ETC if limits.network else ()):
        if os.path.exists(f"/etc/{name}"):
            args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    args += ["--dev", "/dev", "--proc", "/proc"]
    for p in ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"):  # root-writable knobs
        if os.path.exists(p):
            args += ["--ro-bind", p, p]
    args += ["--perms", "1777", "--size", str(limits.tmp_mb * 1024 * 1024), "--tmpfs", "/tmp",
             "--perms", "1777", "--size", str(limits.tmp_mb * 1024 * 1024), "--tmpfs", "/dev/shm",
             "--perms", "1777", "--dir", SCRATCH, "--perms", "1777", "--dir", f"{SCRATCH}/mpl"]
    made: set[str] = set()

    def parents(dest: str | Path) -> list[str]:
        """Make the mount point's missing ancestors traversable (bwrap would make them 0700)."""
        out = []
        for anc in reversed(Path(dest).parents):
            a = str(anc)
            if a in made or a in ("/", "/tmp", "/dev", "/proc", "/etc", SCRATCH) or a.startswith("/usr/"):
                continue
            made.add(a)
            out += ["--perms", "0755", "--dir", a]
        return out

    for root in code_roots():  # after /tmp: a checkout or virtualenv under /tmp stays visible
        args += parents(root) + ["--ro-bind", str(root), str(root)]
    font_cache = matplotlib_cache()
    if font_cache is not None:
        args += ["--ro-bind", str(font_cache), f"{SCRATCH}/mpl/{font_cache.name}"]
    for w in [paths.workdir, *paths.writable]:
        args += parents(w) + ["--bind", str(w), str(w)]
    for src, dst in paths.read_only.items():
        args += parents(dst) + ["--ro-bind", str(src), dst]
    # The inner launcher enters the working directory once it is the sandbox's user (on a root
    # host bwrap itself has no right to: the directory belongs to that user).
    args += ["--chdir", "/", "--"]
    return args


def outer_launcher(cgroup_procs: Sequence[str]) -> list[str]:
    """The host-side launcher: die with the host, join the cgroups, then exec the rest."""
    args = [sys.executable, "-I", str(LAUNCHER), "--parent-pid", str(os.getpid())]
    for f in cgroup_procs:
        args += ["--cgroup", f]
    return args + ["--"]


def inner_launcher(limits: Limits, uid: int | None, argv: Sequence[str], workdir: Path | None = None) -> list[str]:
    """The launcher that sets rlimits and drops privileges right before the kernel starts."""
    args = [sys.executable, "-I", str(LAUNCHER), "--no-new-privs", "--seccomp"]
    if workdir is not None:
        args += ["--chdir", str(workdir)]
    if limits.memory_mb:
        args += ["--memory-mb", str(limits.memory_mb)]
    if limits.max_processes:
        args += ["--nproc", str(limits.max_processes)]
    if limits.max_file_mb:
        args += ["--fsize-mb", str(limits.max_file_mb)]
    if uid is not None:
        args += ["--uid", str(uid), "--gid", str(uid)]
    return args + ["--", *argv]


def sandbox_command(argv: Sequence[str], paths: SandboxPaths, limits: Limits, confinement: Confinement,
                    cgroup_procs: Sequence[str] = ()) -> list[str]:
    """The full command line that starts `argv` confined."""
    if confinement.bwrap is None:  # one launcher does it all, as the host's user
        return outer_launcher(cgroup_procs)[:-1] + inner_launcher(limits, None, argv)[3:]
    return (outer_launcher(cgroup_procs)
            + bwrap_args(confinement.bwrap, paths, limits, privileged=confinement.uid is not None)
            + inner_launcher(limits, confinement.uid, argv, paths.workdir))
