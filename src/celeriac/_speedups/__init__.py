"""Compiled hot-path modules, built from ``_speedups/*.pyx``; pick them through ``_accel``."""
