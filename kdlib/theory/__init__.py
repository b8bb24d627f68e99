"""Closed forms, bounds and rates: one module per paper, each citing its equations."""
