"""CPU defaults: an XLA:CPU flag that makes the training step about 2.6x faster, and huge
pages for glibc's malloc, another 15 % for the small demo model. Commands apply both, first
thing (shg_jax.cli.command); importing a module applies neither.

jaxlib 0.10 routes CPU convolutions through YNNPACK. YNNPACK's forward convolutions are
slower than XLA's Eigen ones on the thesis' shapes, and the kernel gradient (which XLA
expresses as a convolution with the channels as batch) runs at ~30 GFLOP/s, so the thesis
model trained at 0.47 images/s on a 2-core CPU. Taking convolutions (only) away from YNNPACK
with `--xla_cpu_experimental_ynn_fusion_type=-individual_convolution` gives 1.2 images/s
(benchmarks/README.md). Dots, elementwise and reductions keep YNNPACK. The mathematics is the
same; results differ by float rounding only.

Rules: `apply_cpu_defaults` adds the flag to XLA_FLAGS only if the user has not set that flag
themselves, only while no JAX backend has started (XLA reads XLA_FLAGS once, at backend
start), only for the jaxlib versions it was measured on (an unknown flag is a fatal error in
XLA), and never when SHG_JAX_XLA_DEFAULTS=0. It only concerns the CPU backend: XLA:GPU ignores XLA:CPU flags.

Huge pages: XLA:CPU allocates each step's temporaries afresh, and glibc serves blocks this
large by mmap and returns them on free, so every step faults in fresh 4 KiB pages: the demo
spent a fifth of its CPU time in the kernel (69 M page faults in 5 1/2 minutes). With the
tunable `glibc.malloc.hugetlb=1` (glibc >= 2.35) malloc asks for transparent huge pages
(madvise), 2 MiB per fault: 24x fewer faults, 56 -> 65 train images/s on a 2-core Intel Xeon
(benchmarks/README.md). `GLIBC_TUNABLES=glibc.malloc.hugetlb=0` turns it off alone.
glibc reads GLIBC_TUNABLES only when a process starts, so the commands that run the model
(main.py, shg_jax.evaluate, shg_jax.predict, analysis.latent, analysis.skips,
benchmarks.train_step) restart themselves once with it set (`restart_with_hugepage_malloc`,
before JAX is imported), only where the kernel hands out huge pages on request
(transparent_hugepage "madvise"; with "always" they come anyway), never when GLIBC_TUNABLES
already names the tunable, and never with SHG_JAX_XLA_DEFAULTS=0.
"""

from __future__ import annotations

import os
import platform
import sys
import warnings

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
CPU_DEFAULTS = f"{YNN_FLAG}=-individual_convolution"
#: jaxlib (major, minor) versions where the flag exists and was measured.
TESTED_JAXLIB = ((0, 10),)
OPT_OUT = "SHG_JAX_XLA_DEFAULTS"
HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb"
#: The first glibc with the tunable.
HUGEPAGE_GLIBC = (2, 35)
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def apply_cpu_defaults() -> bool:
    """Add CPU_DEFAULTS to $XLA_FLAGS where the rules above allow; True if it was added."""
    if os.environ.get(OPT_OUT, "1") == "0":
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if YNN_FLAG in flags:
        return False
    try:
        import jaxlib.version
        version = tuple(int(p) for p in jaxlib.version.__version__.split(".")[:2])
    except (ImportError, ValueError):
        return False
    if version not in TESTED_JAXLIB:
        return False
    xla_bridge = sys.modules.get("jax._src.xla_bridge")     # no backend without JAX imported
    if xla_bridge is not None and xla_bridge.backends_are_initialized():
        warnings.warn(f"JAX started before the command set up its process, so {CPU_DEFAULTS} "
                      "is not applied and CPU training runs ~2.6x slower; call "
                      "shg_jax.cli.prepare_process() first or put the flag in XLA_FLAGS "
                      "yourself.", stacklevel=3)
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {CPU_DEFAULTS}".strip()
    return True


def thp_mode(path: str = THP_MODE_FILE) -> str | None:
    """The kernel's transparent huge page mode ("always", "madvise", "never"), None if unknown."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def hugepage_tunables(environ: dict, libc: tuple[str, str], mode: str | None) -> str | None:
    """The GLIBC_TUNABLES value that turns on huge pages for malloc, or None where the rules
    of the module docstring say to leave the process as it is.

    environ: the process environment; libc: `platform.libc_ver()`; mode: `thp_mode()`."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if environ.get(OPT_OUT, "1") == "0" or HUGEPAGE_TUNABLE in tunables or mode != "madvise":
        return None
    name, version = libc
    try:
        if name != "glibc" or tuple(map(int, version.split(".")[:2])) < HUGEPAGE_GLIBC:
            return None
    except ValueError:
        return None
    return ":".join(filter(None, [tunables, f"{HUGEPAGE_TUNABLE}=1"]))


def restart_with_hugepage_malloc() -> None:
    """Replace this process by the same command with huge pages for malloc, where
    `hugepage_tunables` says so; otherwise return. Call it first thing in a command's
    __main__ (the new process runs the command from the start; same pid, same arguments)."""
    tunables = hugepage_tunables(os.environ, platform.libc_ver(), thp_mode())
    if tunables is None:
        return
    os.environ["GLIBC_TUNABLES"] = tunables
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
