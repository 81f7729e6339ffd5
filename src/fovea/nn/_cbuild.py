"""Compile a C source into a shared library on first use, cached per source / flags / compiler / CPU, for
fovea's native kernels (selective scan, packed ternary GEMM). The first flag set that compiles wins."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence


def compiler() -> str:
    """$CC, gcc, cc or clang: the first found on PATH."""
    for cand in (os.environ.get("CC"), "gcc", "cc", "clang"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    raise RuntimeError("no C compiler found (tried $CC, gcc, cc, clang)")


def cpu_key() -> str:
    """Machine, OS and the CPU's feature flags: a library built with -march=native is only reused on such a CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return platform.machine() + platform.system() + flags


def cache_dir(name: str) -> Path:
    """$FOVEA_CACHE_DIR/<name> (default ~/.cache/fovea/<name>), or a per-user temp folder if that is not writable."""
    root = os.environ.get("FOVEA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fovea")
    path = Path(root) / name
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    path = Path(tempfile.gettempdir()) / f"fovea-{name}-{os.getuid() if hasattr(os, 'getuid') else 0}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_shared(source: str, name: str, flag_sets: Sequence[Sequence[str]], cache: str) -> Path:
    """Compile `source` as lib `fovea_<name>` with the first flag set that works; returns the cached .so path.
    The file appears atomically, so concurrent builders never load a partial library."""
    cc = compiler()
    errors = []
    for flags in flag_sets:
        key = hashlib.sha256("\0".join([source, " ".join(flags), cc, cpu_key()]).encode()).hexdigest()[:16]
        out = cache_dir(cache) / f"fovea_{name}_{key}.so"
        if out.exists():
            return out
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / f"fovea_{name}.c"
            src.write_text(source)
            tmp_so = Path(tmp) / f"fovea_{name}.so"
            proc = subprocess.run([cc, *flags, str(src), "-o", str(tmp_so), "-lm"], capture_output=True, text=True)
            if proc.returncode == 0:
                staged = out.with_suffix(f".{os.getpid()}.tmp")
                shutil.copyfile(tmp_so, staged)
                os.replace(staged, out)
                return out
            errors.append(f"{cc} {' '.join(flags)}: {proc.stderr.strip()[-400:]}")
    raise RuntimeError(f"compiling the {name} kernel failed: " + " | ".join(errors))


_POOLS: dict[str, tuple[int, ThreadPoolExecutor]] = {}


def thread_pool(name: str, workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of at least `workers` threads for one kernel family (ctypes calls release the
    GIL, so kernel calls on disjoint ranges run side by side). A pool inherited through fork() has no
    threads: the child gets a new one."""
    pid, pool = _POOLS.get(name, (None, None))
    if pool is None or pid != os.getpid() or pool._max_workers < workers:
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"fovea-{name}")
        _POOLS[name] = (os.getpid(), pool)
    return pool
