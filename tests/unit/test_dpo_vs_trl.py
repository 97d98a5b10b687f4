"""Our DPO losses equal TRL 1.12's own (requirements/lock/bench.txt; `make test` installs it), losses and
gradients, on the same random batch: ≤ 1e-6.

TRL 1.12 has no free loss function: DPO's losses ('sigmoid', 'ipo', 'robust') live inside
`DPOTrainer._compute_loss(self, model, inputs)` and SimPO / CPO's label-smoothed sigmoid inside
`CPOTrainer.cpo_loss(self, chosen_logps, rejected_logps)`. We call those real methods unbound, with `self` a
namespace holding exactly the attributes they read (what `DPOTrainer.__init__` sets from its DPOConfig:
beta, loss_type list, label_smoothing, precompute_ref_logps=True, ld_alpha=None, f_divergence_type
'reverse_kl', no WPO weighting, no MoE aux loss, and an accelerator that gathers nothing). `model` is a
module whose forward returns one random logits Parameter, so TRL computes its log-probs from the same logits
we do, and both gradients are taken with respect to those logits.
"""

from __future__ import annotations

import os
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
from trl import DPOTrainer  # noqa: E402
from trl.experimental.cpo import CPOTrainer  # noqa: E402

from rlhf_dist.algo import preference_losses  # noqa: E402
from rlhf_dist.algo.dpo_registry import DPOLossInputs  # noqa: E402

B, L, V, PROMPT = 6, 10, 13, 3


class LogitsModel(torch.nn.Module):
    """A 'model' whose logits are a Parameter: TRL's forward returns them whatever the input ids."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(logits.clone())

    def forward(self, **_: object) -> SimpleNamespace:
        return SimpleNamespace(logits=self.logits)


def _batch(seed: int) -> dict[str, torch.Tensor]:
    """[chosen rows; rejected rows] as TRL's collator stacks them: prompt of PROMPT tokens, completions of
    random lengths, right padding; random reference log-probs."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, L - PROMPT + 1, (2 * B,), generator=gen)
    pos = torch.arange(L)
    completion = ((pos >= PROMPT) & (pos < PROMPT + lengths[:, None])).long()
    return {
        "logits": torch.randn(2 * B, L, V, generator=gen, dtype=torch.float64) * 2,
        "input_ids": torch.randint(0, V, (2 * B, L), generator=gen),
        "attention_mask": (pos < PROMPT + lengths[:, None]).long(),
        "completion_mask": completion,
        "ref_chosen_logps": torch.randn(B, generator=gen, dtype=torch.float64) * 3 - 12,
        "ref_rejected_logps": torch.randn(B, generator=gen, dtype=torch.float64) * 3 - 12,
    }


def _trl_dpo(loss_type: str, beta: float, eps: float, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    model = LogitsModel(batch["logits"])
    accelerator = SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda t: t, gather=lambda t: t,
                                  unwrap_model=lambda m: m)
    trainer = SimpleNamespace(
        model=model, accelerator=accelerator, aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True,
        f_divergence_type="reverse_kl", loss_types=[loss_type], loss_weights=[1.0], beta=beta,
        label_smoothing=eps, use_weighting=False, _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0)
    inputs = {k: v for k, v in batch.items() if k != "logits"}
    loss = DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    loss.backward()
    return loss.detach(), model.logits.grad


def _our_inputs(logits: torch.Tensor, batch: dict, beta: float, eps: float, gamma: float = 0.0) -> DPOLossInputs:
    """Summed response log-probs from the logits (position t predicts token t + 1), as the DPO stage computes
    them (models/objectives.py pair_logprobs)."""
    labels, mask = batch["input_ids"][:, 1:], batch["completion_mask"][:, 1:]
    per_token = torch.log_softmax(logits[:, :-1], -1).gather(-1, labels[..., None]).squeeze(-1)
    sums, lengths = (per_token * mask).sum(1), mask.sum(1)
    return DPOLossInputs(sums[:B], sums[B:], batch["ref_chosen_logps"], batch["ref_rejected_logps"], lengths[:B],
                         lengths[B:], torch.ones(B, dtype=torch.float64), beta, eps, gamma)


@pytest.mark.parametrize("loss_type, beta, eps", [("sigmoid", 0.1, 0.0), ("sigmoid", 0.5, 0.0), ("ipo", 0.1, 0.0),
                                                  ("ipo", 0.7, 0.0), ("robust", 0.1, 0.1), ("robust", 0.3, 0.3)])
def test_dpo_losses_equal_trl(loss_type, beta, eps):
    batch = _batch(seed=sum(map(ord, loss_type)) + int(beta * 10))
    trl_loss, trl_grad = _trl_dpo(loss_type, beta, eps, batch)
    logits = batch["logits"].clone().requires_grad_(True)
    losses, _, _ = preference_losses(loss_type, _our_inputs(logits, batch, beta, eps))
    loss = losses.mean()
    loss.backward()
    assert abs(loss.item() - trl_loss.item()) <= 1e-6, (loss.item(), trl_loss.item())
    assert (logits.grad - trl_grad).abs().max().item() <= 1e-6
    assert trl_grad.abs().max().item() > 1e-3  # the gradients compared are not all zero


def _trl_cpo(loss_type: str, beta: float, eps: float, gamma: float, chosen: torch.Tensor,
             rejected: torch.Tensor) -> torch.Tensor:
    trainer = SimpleNamespace(alpha=0.0, loss_type=loss_type, beta=beta, label_smoothing=eps, simpo_gamma=gamma,
                              accelerator=SimpleNamespace(device=torch.device("cpu")))
    return CPOTrainer.cpo_loss(trainer, chosen, rejected)[0]


@pytest.mark.parametrize("beta, gamma", [(2.0, 0.5), (2.5, 1.4), (0.1, 0.0)])
def test_simpo_equals_trl_cpo(beta, gamma):
    """SimPO: CPO with loss_type 'simpo' on length-averaged log-probs (CPOTrainer.concatenated_forward's
    average_log_prob=True), TRL's own SimPO."""
    batch = _batch(seed=7)
    logits = batch["logits"].clone().requires_grad_(True)
    x = _our_inputs(logits, batch, beta, 0.0, gamma)
    ours = preference_losses("simpo", x)[0]
    theirs = _trl_cpo("simpo", beta, 0.0, gamma, x.chosen_logps / x.chosen_lengths,
                      x.rejected_logps / x.rejected_lengths)
    g_ours, = torch.autograd.grad(ours.mean(), logits, retain_graph=True)
    g_theirs, = torch.autograd.grad(theirs.mean(), logits)
    assert (ours - theirs).abs().max().item() <= 1e-6
    assert (g_ours - g_theirs).abs().max().item() <= 1e-6 and g_theirs.abs().max().item() > 1e-3


@pytest.mark.parametrize("eps", [0.1, 0.25])
def test_label_smoothed_dpo_equals_trl_conservative_sigmoid(eps):
    """cDPO: TRL 1.12's DPO 'sigmoid' has no label smoothing; its CPO 'sigmoid' does (-(1 - eps) log sigmoid(beta
    d) - eps log sigmoid(-beta d)). Fed the log-ratios as its log-probs, d is DPO's log-ratio gap."""
    batch = _batch(seed=11)
    logits = batch["logits"].clone().requires_grad_(True)
    x = _our_inputs(logits, batch, 0.2, eps)
    ours = preference_losses("sigmoid", x)[0]
    theirs = _trl_cpo("sigmoid", 0.2, eps, 0.0, x.chosen_logps - x.ref_chosen_logps,
                      x.rejected_logps - x.ref_rejected_logps)
    g_ours, = torch.autograd.grad(ours.mean(), logits, retain_graph=True)
    g_theirs, = torch.autograd.grad(theirs.mean(), logits)
    assert (ours - theirs).abs().max().item() <= 1e-6
    assert (g_ours - g_theirs).abs().max().item() <= 1e-6 and g_theirs.abs().max().item() > 1e-3
