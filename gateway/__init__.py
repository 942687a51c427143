"""Focal-point gateway: a store-and-forward relay for sealed, signed messages between
national focal points. See docs/ARCHITECTURE.md for how the parts fit."""

__version__ = "0.1.0"
