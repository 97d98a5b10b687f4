"""Built-in advantage estimators, one per module: importing this package registers every module of the folder
(algo/registry.py). Modules here import torch inside their functions only (the schema reads them)."""

from rlhf_dist.algo.registry import import_all

import_all(__name__, __path__)
