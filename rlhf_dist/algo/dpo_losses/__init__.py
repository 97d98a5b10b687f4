"""Built-in DPO losses, one per module: importing this package registers every module of the folder
(algo/dpo_registry.py). Modules here import torch inside their functions only (the schema reads them)."""

from rlhf_dist.algo.registry import import_all

import_all(__name__, __path__)
