"""kdlib: batched, GPU-capable simulations that prove knowledge-distillation theorems.

The companion library of the book *Distillation, Executed*. Modules:

``config``   device, scale (``quick``/``full``) and seeds, from one documented setting
``models``   students with a leading replica axis (many seeds x hyper-parameters at once)
``losses``   hard-label, soft-label and distillation losses, per replica
``train``    batched gradient descent with recorded curves
``claims``   executable claims: prediction vs measurement, raising when a theorem fails
``plots``    the book's figure style
``data``     offline real data and each paper's synthetic data model
``theory``   closed forms, bounds and rates, one module per paper
``experiments``  one function per experiment of each chapter (notebooks, tests and CLI share them)
``memory``   host memory kept for reuse between training steps (set on import; see its docstring)
"""

from . import claims, config, losses, models, plots, train
from .claims import ClaimFailed, Claims
from .config import get_device, get_scale, resolve, seed_everything
from .memory import keep_freed_memory

keep_freed_memory()  # importing allocates nothing large: from here on, large CPU steps reuse pages

__version__ = "0.1.0"
__all__ = [
    "ClaimFailed",
    "Claims",
    "claims",
    "config",
    "get_device",
    "get_scale",
    "losses",
    "models",
    "plots",
    "resolve",
    "seed_everything",
    "train",
]
