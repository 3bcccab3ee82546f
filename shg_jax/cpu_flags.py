"""XLA:CPU defaults that make the training step about 2.6x faster on CPU (issue 10).

jaxlib 0.10 routes CPU convolutions through YNNPACK. YNNPACK's forward convolutions are
slower than XLA's Eigen ones on the thesis' shapes, and the kernel gradient (which XLA
expresses as a convolution with the channels as batch) runs at ~30 GFLOP/s, so the thesis
model trained at 0.47 images/s on a 2-core CPU. Taking convolutions (only) away from YNNPACK
with `--xla_cpu_experimental_ynn_fusion_type=-individual_convolution` gives 1.2 images/s
(benchmarks/README.md). Dots, elementwise and reductions keep YNNPACK. The mathematics is the
same; results differ by float rounding only.

Rules: the flag is added to XLA_FLAGS only if the user has not set that flag themselves, only
while no JAX backend has started (XLA reads XLA_FLAGS once, at backend start), only for the
jaxlib versions it was measured on (an unknown flag is a fatal error in XLA), and never when
SHG_JAX_XLA_DEFAULTS=0. It only concerns the CPU backend: XLA:GPU ignores XLA:CPU flags.
"""

from __future__ import annotations

import os
import warnings

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
CPU_DEFAULTS = f"{YNN_FLAG}=-individual_convolution"
#: jaxlib (major, minor) versions where the flag exists and was measured.
TESTED_JAXLIB = ((0, 10),)
OPT_OUT = "SHG_JAX_XLA_DEFAULTS"


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
    from jax._src import xla_bridge
    if xla_bridge.backends_are_initialized():
        warnings.warn(f"JAX started before shg_jax was imported, so {CPU_DEFAULTS} is not "
                      "applied and CPU training runs ~2.6x slower; import shg_jax first or "
                      "put the flag in XLA_FLAGS yourself.", stacklevel=3)
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {CPU_DEFAULTS}".strip()
    return True
