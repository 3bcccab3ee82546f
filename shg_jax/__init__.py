"""shg-jax: the Stacked Hourglass of Andersen (2021) in JAX/Flax NNX."""

from shg_jax.cpu_flags import apply_cpu_defaults

__version__ = "0.1.0"

apply_cpu_defaults()
