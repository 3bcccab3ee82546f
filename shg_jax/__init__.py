"""shg-jax: the Stacked Hourglass of Andersen (2021) in JAX/Flax NNX.

Importing any module of shg_jax, data_prep or analysis changes nothing in the process; the
commands set it up first thing (shg_jax.cli.command).
"""

__version__ = "0.1.0"
