"""Data for the book's experiments.

Real data that ships offline (:mod:`kdlib.data.digits`: scikit-learn's bundled 8x8 digits) and the
synthetic generators of each paper's data model (one module per paper, added by its chapter).
Every generator draws from a seeded CPU generator, so a seed gives the same data on every device.
"""

from .digits import Split, load_digits_split

__all__ = ["Split", "load_digits_split"]
