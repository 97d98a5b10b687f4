"""Built-in reward sources, one per module: importing this package registers every module of the folder
(rewards/registry.py). Modules here do not import torch (the schema reads them)."""

from rlhf_dist.algo.registry import import_all

import_all(__name__, __path__)
