"""The seed's four experiments (`rlhf-dist experiment ...`); docs/experiments/README.md has the write-ups.

    pooling          reward model: last-token vs mean pooling, held-out accuracy with its CI   (pooling.py)
    length-hacking   PPO on len(response)/100 at KL coef 0 and 0.1                               (hacking.py)
    kl-sweep         the same at KL coef 0.001 / 0.02 / 0.5                                      (hacking.py)
    multi-objective  PPO on R_helpful, R_concise and 0.7 R_helpful + 0.3 R_concise               (multi_objective.py)

Each writes <out>/<name>.json (results, per-step curves, example generations, how to reproduce) and
<out>/<name>.png; the arms' run directories go under <run.output_dir>/<name>/.
"""

from rlhf_dist.eval.experiments.hacking import (
    KL_SWEEP_COEFS, LENGTH_HACKING_COEFS, LENGTH_REWARD, reward_hacking_experiment, sweep_config,
)
from rlhf_dist.eval.experiments.multi_objective import multi_objective_experiment
from rlhf_dist.eval.experiments.pooling import pooling_experiment

__all__ = ["KL_SWEEP_COEFS", "LENGTH_HACKING_COEFS", "LENGTH_REWARD", "multi_objective_experiment",
           "pooling_experiment", "reward_hacking_experiment", "sweep_config"]
