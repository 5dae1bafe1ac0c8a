"""How a kernel process is confined: its environment, its resource limits, and bubblewrap.

The host builds one command line, `sandbox_command(...)`:

    python -I launch.py --memory-mb .. --nproc .. --fsize-mb .. --
        [bwrap --ro-bind / / ... --unshare-net --die-with-parent --]  <kernel argv>

`launch.py` (stdlib only) runs in the child: it arranges to die with the host
(PR_SET_PDEATHSIG), sets the rlimits, then execs the rest. bubblewrap, when it is installed and
works here, gives the kernel a read-only view of the system, a private /tmp, only its working
directory (and the runtime directory holding its sockets) writable, and no network unless
`Limits.network` is true. Without bubblewrap the kernel still gets the scrubbed environment and
the rlimits, and a warning is logged once.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from .base import SANDBOX_MODES, KernelError, Limits, SandboxMode

log = logging.getLogger(__name__)

LAUNCHER = Path(__file__).with_name("launch.py")

# Variables passed through from the host when set. Everything else is dropped: credentials
# (OPENAI_API_KEY, *_TOKEN, AWS_*, HF_*, ...) never reach user code.
ENV_ALLOWLIST = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_NUMERIC", "LC_TIME",
                 "LC_COLLATE", "LC_MESSAGES", "TZ", "TERM", "USER", "LOGNAME", "SHELL",
                 "PYTHONHASHSEED", "SOURCE_DATE_EPOCH")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "NUMEXPR_MAX_THREADS", "VECLIB_MAXIMUM_THREADS",
               "BLIS_NUM_THREADS", "RAYON_NUM_THREADS", "POLARS_MAX_THREADS", "TF_NUM_INTRAOP_THREADS",
               "TF_NUM_INTEROP_THREADS")
# Headless and inline: figures become PNG outputs (plain "Agg" would drop them).
MPL_BACKEND = "module://matplotlib_inline.backend_inline"
# Host files that hold credentials; hidden from the kernel (under bubblewrap) when present.
SECRET_PATHS = (".ssh", ".aws", ".azure", ".gnupg", ".netrc", ".docker", ".kube", ".config/gcloud",
                ".config/gh", ".cache/huggingface", ".huggingface", ".git-credentials", ".pypirc",
                ".npmrc")


@dataclass
class SandboxPaths:
    """The directories a kernel may write: its working dir, the runtime dir (sockets, caches)."""

    workdir: Path
    runtime: Path
    extra_writable: list[Path] = field(default_factory=list)


def kernel_env(workdir: Path, runtime: Path, limits: Limits,
               extra: Mapping[str, str] | None = None, host_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The scrubbed environment a kernel sees: an allow-list of the host's, plus our settings."""
    host_env = os.environ if host_env is None else host_env
    env = {k: host_env[k] for k in ENV_ALLOWLIST if k in host_env}
    env.setdefault("PATH", os.defpath)
    env.setdefault("LANG", "C.UTF-8")
    threads = str(max(1, limits.cpu_threads))
    env.update({name: threads for name in THREAD_VARS})
    env.update({
        "HOME": str(workdir),
        "PWD": str(workdir),
        "TMPDIR": "/tmp",
        "MPLBACKEND": MPL_BACKEND,
        # pandas 3 keeps strings in Arrow when pyarrow is installed, and Arrow's default
        # allocator (mimalloc) reserves ~1 GiB of address space up front: under the RLIMIT_AS
        # memory limit that alone made a small CSV plus a plot fail. The system allocator
        # reserves only what it uses.
        "ARROW_DEFAULT_MEMORY_POOL": "system",
        "MPLCONFIGDIR": str(runtime / "mpl"),
        "IPYTHONDIR": str(runtime / "ipython"),
        "JUPYTER_CONFIG_DIR": str(runtime / "jupyter"),
        "JUPYTER_DATA_DIR": str(runtime / "jupyter"),
        "JUPYTER_RUNTIME_DIR": str(runtime / "jupyter"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "NOTEBOOK_AGENT_KERNEL": "1",
    })
    if extra:
        env.update(extra)
    return env


def prepare_runtime(runtime: Path) -> None:
    """Create the runtime dir's caches; seed matplotlib's font cache so kernels skip rebuilding it."""
    (runtime / "mpl").mkdir(parents=True, exist_ok=True)
    (runtime / "ipython").mkdir(exist_ok=True)
    (runtime / "jupyter").mkdir(exist_ok=True)
    cache = matplotlib_cache()
    if cache is not None:
        for f in cache.glob("fontlist-*.json"):
            shutil.copy2(f, runtime / "mpl" / f.name)


@functools.lru_cache(maxsize=1)
def matplotlib_cache() -> Path | None:
    """A host-side matplotlib config dir with the font list built once (about 0.4 s, first time)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "notebook-agent" / "mpl"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not any(root.glob("fontlist-*.json")):
            subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"], timeout=120,
                           env={**kernel_env(root, root, Limits()), "MPLCONFIGDIR": str(root)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        return root if any(root.glob("fontlist-*.json")) else None
    except (OSError, subprocess.SubprocessError) as exc:  # a cache is an optimisation only
        log.debug("no matplotlib font cache: %s", exc)
        return None


@functools.lru_cache(maxsize=1)
def bwrap_path() -> str | None:
    """The bubblewrap binary when it is installed *and* can create a sandbox here.

    Containers often forbid the namespaces bubblewrap needs; then we fall back (with a warning).
    """
    exe = shutil.which("bwrap")
    if exe is None:
        log.warning("bubblewrap (bwrap) not found: kernels run without filesystem/network isolation "
                    "(install the 'bubblewrap' package to enable it)")
        return None
    probe = [exe, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
             "--unshare-net", "--unshare-pid", "--die-with-parent", "true"]
    try:
        res = subprocess.run(probe, capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("bubblewrap does not work here (%s): kernels run without isolation", exc)
        return None
    if res.returncode != 0:
        log.warning("bubblewrap does not work here (%s): kernels run without isolation",
                    res.stderr.decode(errors="replace").strip())
        return None
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


def bwrap_args(exe: str, paths: SandboxPaths, limits: Limits, host_home: str | None = None) -> list[str]:
    """bubblewrap's arguments: read-only system, private /tmp, writable workdir and runtime dir."""
    args = [exe, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--tmpfs", "/tmp", "--tmpfs", "/dev/shm",
            "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"]
    if not limits.network:
        args.append("--unshare-net")
    # The private /tmp hides whatever the host keeps there; a checkout or a virtual environment
    # under /tmp (as CI machines often have) must stay visible, read-only.
    for p in _code_paths_under(("/tmp", "/dev/shm")):
        args += ["--ro-bind", str(p), str(p)]
    writable = [paths.workdir, paths.runtime, *paths.extra_writable]
    home = host_home if host_home is not None else os.environ.get("HOME")
    for rel in SECRET_PATHS if home else ():
        p = Path(home) / rel
        if p.exists() and not any(_inside(w, p) or _inside(p, w) for w in writable):
            args += ["--tmpfs", str(p)] if p.is_dir() else ["--ro-bind", "/dev/null", str(p)]
    for w in writable:
        args += ["--bind", str(w), str(w)]
    args += ["--chdir", str(paths.workdir), "--"]
    return args


def _code_paths_under(roots: Sequence[str]) -> list[Path]:
    """The interpreter's prefixes, import path and this package's source that lie under `roots`,
    outermost only."""
    candidates = {sys.prefix, sys.exec_prefix, sys.base_prefix, *sys.path, str(Path(__file__).parents[2])}
    found = {Path(c).resolve() for c in candidates if c and Path(c).exists()}
    found = {p for p in found if any(_inside(p, Path(r)) for r in roots)}
    return sorted(p for p in found if not any(q != p and _inside(p, q) for q in found))


def _inside(child: Path, parent: Path) -> bool:
    try:
        Path(child).resolve().relative_to(Path(parent).resolve())
        return True
    except ValueError:
        return False


def launcher_args(limits: Limits) -> list[str]:
    """The launcher that sets rlimits and the parent-death signal in the child, then execs."""
    args = [sys.executable, "-I", str(LAUNCHER), "--parent-pid", str(os.getpid())]
    if limits.memory_mb:
        args += ["--memory-mb", str(limits.memory_mb)]
    if limits.max_processes:
        args += ["--nproc", str(limits.max_processes)]
    if limits.max_file_mb:
        args += ["--fsize-mb", str(limits.max_file_mb)]
    return args + ["--"]


def sandbox_command(argv: Sequence[str], paths: SandboxPaths, limits: Limits, bwrap: str | None) -> list[str]:
    """The full command line that starts `argv` confined."""
    cmd = launcher_args(limits)
    if bwrap:
        cmd += bwrap_args(bwrap, paths, limits)
    return cmd + list(argv)
