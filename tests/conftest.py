"""Test-suite setup: the same XLA:CPU setting as the command lines (before JAX's backend starts)."""

from snnjax import xla_cpu

xla_cpu.tune()
