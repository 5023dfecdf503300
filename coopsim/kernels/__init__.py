"""Kernel launch: one greenlet per program instance, in a small tile language."""

from coopsim.kernels.examples import gemm, gemm_kernel, vector_add, vector_add_kernel
from coopsim.kernels.launch import Program, launch

__all__ = ["Program", "gemm", "gemm_kernel", "launch", "vector_add", "vector_add_kernel"]
