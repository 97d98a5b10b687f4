"""Built-in weight-sync transports, one per module: importing this package registers every module of the
folder (backends/sync/registry.py). Modules here import torch and rlhf_dist.config inside functions only
(the config schema reads the registry)."""

from rlhf_dist.algo.registry import import_all

import_all(__name__, __path__)
