"""A session's working directory: created, filled with the task's files, copied, measured, removed.

The kernel can write its working directory, so everything here that touches one after the
kernel started goes by file descriptor and never follows a link the kernel may have planted:
directories are opened with O_NOFOLLOW and walked relative to their descriptor, files are
created with O_EXCL | O_NOFOLLOW, and anything that is not a regular file, a directory or a
symlink (a FIFO that would block a read, a socket, a device) is skipped. Symlinks are copied
as links, never followed.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterable

PathLike = str | os.PathLike[str]

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def make_workdir(workdir: PathLike | None, prefix: str = "na-work-") -> tuple[Path, bool]:
    """The working directory to use, and whether we created it (then we may delete it)."""
    if workdir is None:
        return Path(tempfile.mkdtemp(prefix=prefix)).resolve(), True
    path = Path(workdir).expanduser().resolve()
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    return path, created


def check_files(files: Iterable[PathLike]) -> list[Path]:
    """Validate task files up front, so a bad path fails before a kernel is started."""
    paths = [Path(f).expanduser() for f in files]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"task file(s) not found: {', '.join(missing)}")
    seen: dict[str, Path] = {}
    for p in paths:
        if p.name in seen and seen[p.name].resolve() != p.resolve():
            raise ValueError(f"two task files share the name {p.name!r} ({seen[p.name]} and {p}); "
                             "files are placed in the working directory by base name")
        seen[p.name] = p
    return paths


def _chown(fd: int, owner: int | None) -> None:
    if owner is not None:
        os.fchown(fd, owner, owner)


def _copy_file_fd(src_fd: int, name: str, dst_dir_fd: int, mode: int, owner: int | None) -> None:
    out = os.open(name, _CREATE, mode & 0o777, dir_fd=dst_dir_fd)
    try:
        _chown(out, owner)
        while True:
            n = os.sendfile(out, src_fd, None, 1 << 24)
            if n == 0:
                break
    finally:
        os.close(out)


def _copy_dir_fd(src_fd: int, dst_fd: int, owner: int | None) -> None:
    """Copy the contents of one open directory into another, without following links."""
    with os.scandir(src_fd) as entries:
        for entry in entries:
            name = entry.name
            try:
                st = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed meanwhile
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(name, dir_fd=src_fd), name, dir_fd=dst_fd)
                if owner is not None:
                    os.chown(name, owner, owner, dir_fd=dst_fd, follow_symlinks=False)
            elif stat.S_ISDIR(st.st_mode):
                os.mkdir(name, st.st_mode & 0o777 | 0o700, dir_fd=dst_fd)
                sub_src = os.open(name, _DIR, dir_fd=src_fd)
                try:
                    sub_dst = os.open(name, _DIR, dir_fd=dst_fd)
                    try:
                        _chown(sub_dst, owner)
                        _copy_dir_fd(sub_src, sub_dst, owner)
                    finally:
                        os.close(sub_dst)
                finally:
                    os.close(sub_src)
            elif stat.S_ISREG(st.st_mode):
                fd = os.open(name, _READ, dir_fd=src_fd)
                try:
                    if stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for something else meanwhile?
                        _copy_file_fd(fd, name, dst_fd, st.st_mode, owner)
                finally:
                    os.close(fd)
            # FIFOs, sockets and devices are not copied


def place_files(files: Iterable[PathLike], dest: Path, owner: int | None = None) -> list[Path]:
    """Copy each host file (or directory) into `dest` under its base name, owned by `owner`.

    Sources are the caller's files (followed as given); the destination is a working directory
    the kernel may have written, so it is written by descriptor without following links, and a
    name that already exists there is refused rather than overwritten through.
    """
    placed = []
    dest_fd = os.open(dest, _DIR)
    try:
        for src in check_files(files):
            target = dest / src.name
            if src.resolve() == target.resolve():
                placed.append(target)
                continue
            if src.is_dir():
                os.mkdir(src.name, 0o755, dir_fd=dest_fd)
                sub = os.open(src.name, _DIR, dir_fd=dest_fd)
                src_fd = os.open(src.resolve(), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    _chown(sub, owner)
                    _copy_dir_fd(src_fd, sub, owner)
                finally:
                    os.close(sub)
                    os.close(src_fd)
            else:
                fd = os.open(src.resolve(), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _copy_file_fd(fd, src.name, dest_fd, os.fstat(fd).st_mode | 0o600, owner)
                finally:
                    os.close(fd)
            placed.append(target)
    finally:
        os.close(dest_fd)
    return placed


def copy_workdir(src: Path, dst: Path, owner: int | None = None, *, create: bool = True) -> None:
    """An independent copy of a working directory (for forks: writes must not leak back).

    `dst` is created here (a name planted in its place makes this fail), or with create=False
    is an empty directory the host just made (e.g. by mkdtemp).
    """
    if create:
        os.mkdir(dst, 0o700)
    src_fd = os.open(src, _DIR)
    try:
        dst_fd = os.open(dst, _DIR)
        try:
            _chown(dst_fd, owner)
            _copy_dir_fd(src_fd, dst_fd, owner)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)


def own_tree(path: Path, owner: int | None) -> None:
    """Give a directory the host just made (and its contents) to the sandbox's user."""
    if owner is None:
        return
    fd = os.open(path, _DIR)
    try:
        _chown(fd, owner)
        _own_contents(fd, owner)
    finally:
        os.close(fd)


def _own_contents(dir_fd: int, owner: int) -> None:
    with os.scandir(dir_fd) as entries:
        for entry in entries:
            os.chown(entry.name, owner, owner, dir_fd=dir_fd, follow_symlinks=False)
            if entry.is_dir(follow_symlinks=False):
                sub = os.open(entry.name, _DIR, dir_fd=dir_fd)
                try:
                    _own_contents(sub, owner)
                finally:
                    os.close(sub)


def tree_bytes(path: Path, stop_at: int | None = None) -> int:
    """Disk space used under `path` (allocated blocks, links not followed); stops counting past
    `stop_at`."""
    try:
        fd = os.open(path, _DIR)
    except OSError:
        return 0
    total = 0

    def walk(dir_fd: int) -> None:
        nonlocal total
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += st.st_blocks * 512
                if stop_at is not None and total > stop_at:
                    return
                if stat.S_ISDIR(st.st_mode):
                    try:
                        sub = os.open(entry.name, _DIR, dir_fd=dir_fd)
                    except OSError:
                        continue
                    try:
                        walk(sub)
                    finally:
                        os.close(sub)

    try:
        walk(fd)
    finally:
        os.close(fd)
    return total


def remove_tree(path: Path | None) -> None:
    """Remove a directory tree; shutil's fd-based rmtree never follows links out of it."""
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
