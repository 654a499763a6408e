"""Classroom emotion sensing at the edge: anonymised per-minute emotion counts."""

__version__ = "0.1.0"
