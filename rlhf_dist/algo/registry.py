"""Registries of the pluggable PPO pieces: advantage estimators, policy losses and KL estimators.

Each piece registers itself, with the properties the rest of the system asks about, by decorating its
function. The config schema's choices (ppo.advantage, ppo.policy_loss, ppo.kl.estimator) and their
descriptions in docs/config-reference.md, the config rules (group estimators, needs a critic), the driver
(driver/experience.py) and the loss (algo/losses.py) all read the registry, so a new piece is ONE file plus
its test::

    # rlhf_dist/algo/estimators/my_adv.py  (a built-in: every module of the folder is imported)
    from rlhf_dist.algo.registry import ADVANTAGES, AdvantageInputs

    @ADVANTAGES.register("my_adv", group=True)
    def my_adv(x: AdvantageInputs) -> tuple[Tensor, Tensor]:
        \"\"\"A_i = ... (the first paragraph of the docstring is the option's description).\"\"\"
        from rlhf_dist.algo.advantages import broadcast_sequence_advantages  # torch: inside, see below
        ...

Built-ins live one per module in algo/estimators/, algo/policy_losses/ and algo/kl_estimators/; importing
rlhf_dist.algo imports every module of those folders (no list to edit). They must not import torch at
module level: the schema reads their names and properties, and `rlhf-dist config validate` / `--help`
run without torch (tests/unit/test_registries.py checks it); the tensor code imports what it needs inside
the function.

Plugins outside the package (or in a test) are named in the config as 'module:function', e.g.
``ppo.advantage: my_pkg.my_adv:my_adv``. Looking such a name up imports `module`, whose decorator
registers the function, and the entry is then known under that name too. Every process that looks it up
does this itself: the driver validating the config, and each Ray actor, which validates the config again
when it starts (workers/base.py), so the module only has to be importable there (installed, or on the
path, as tests/ is in the test suite). A bare name registered at run time exists only in the process that
registered it: Ray actors would refuse it, so plugins use the 'module:function' form. Keep a plugin
module cheap to import (every actor imports it). tests/integration/test_registries.py is a worked example:
an estimator and a loss defined in the test file run a PPO step.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from torch import Tensor

# How the policy loss reduces over tokens (algo/losses.py aggregate_loss); here so that registrations can
# be checked without torch.
LOSS_AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")


@dataclass(frozen=True)
class Entry:
    """One registered piece: its config name, function and one-paragraph description (its docstring's)."""

    name: str
    fn: Callable[..., Any]
    description: str


@dataclass(frozen=True)
class AdvantageEstimator(Entry):
    """fn(AdvantageInputs) -> (advantages [B, R], returns [B, R]), both 0 on padding."""

    needs_critic: bool = False  # the run gets a critic (value model) whose values the estimator reads
    group: bool = False  # compares the G samples of one prompt: needs G >= 2, enables ppo.dynamic_sampling
    loss_aggregation: str | None = None  # ppo.loss_aggregation when unset (before the policy loss's default)


@dataclass(frozen=True)
class PolicyLoss(Entry):
    """fn(PolicyLossInputs) -> (scalar loss, dict of detached scalar stats)."""

    loss_aggregation: str | None = None  # ppo.loss_aggregation when unset and the estimator sets none


@dataclass(frozen=True)
class KLEstimator(Entry):
    """fn(log_ratio [B, T]) -> per-token estimate [B, T] of KL(pi || pi_ref), log_ratio = log pi - log pi_ref."""


@dataclass(frozen=True)
class AdvantageInputs:
    """What an advantage estimator sees: one rollout batch of B sequences with R response columns."""

    scores: Tensor  # [B] sequence scores after ppo.reward_clip / ppo.reward_normalize
    token_rewards: Tensor  # [B, R] -kl_coef * KL per token, plus the score on the last valid token
    sequence_rewards: Tensor  # [B] score - kl_coef * sum_t KL: what group estimators compare
    values: Tensor  # [B, R] critic values (zeros without a critic)
    mask: Tensor  # [B, R] valid response tokens
    group_size: int  # G = rollout.sampling.samples_per_prompt; rows k*G .. k*G + G - 1 share a prompt
    gamma: float  # ppo.gamma
    lam: float  # ppo.lam
    whiten: bool  # ppo.whiten_advantages


@dataclass(frozen=True)
class PolicyLossInputs:
    """What a policy loss sees for one micro-batch, all [B, R] tensors."""

    logprobs: Tensor  # current policy log-probs (with grad)
    old_logprobs: Tensor  # log-probs at rollout time (ppo.old_logprobs)
    advantages: Tensor
    mask: Tensor  # valid response tokens
    clip_eps: float  # the clip's low bound eps_low (ppo.clip_eps_low, default ppo.clip_eps): r >= 1 - eps_low
    dual_clip: float | None  # ppo.dual_clip
    aggregation: str  # one of LOSS_AGGREGATIONS (already resolved)
    is_weights: Tensor | None  # truncated importance weights (ppo.tis_cap, ppo.tis_level), detached; None = 1
    clip_eps_high: float | None = None  # the high bound (ppo.clip_eps_high): r <= 1 + eps_high; None = clip_eps

    @property
    def clip_range(self) -> tuple[float, float]:
        """(lowest, highest) ratio the clip keeps: (1 - eps_low, 1 + eps_high)."""
        high = self.clip_eps if self.clip_eps_high is None else self.clip_eps_high
        return 1.0 - self.clip_eps, 1.0 + high


EntryT = TypeVar("EntryT", bound=Entry)


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


class Registry(Generic[EntryT]):
    """Name -> entry for one kind of piece. For messages: `kind` says what an entry is, `option` is the
    config field that names one, `symbol` the registry's name in module `home`."""

    def __init__(self, kind: str, option: str, symbol: str, entry_type: type[EntryT],
                 home: str = "rlhf_dist.algo.registry") -> None:
        self.kind, self.option, self.symbol, self.home = kind, option, symbol, home
        self.entry_type = entry_type
        self._entries: dict[str, EntryT] = {}
        self._aliases: dict[str, EntryT] = {}  # 'module:function' names of plugins, once loaded

    def register(self, name: str, **properties: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register the function under `name` with `properties` (fields of the entry type)."""
        known = {f.name for f in fields(self.entry_type)} - {"name", "fn", "description"}
        unknown = sorted(set(properties) - known)
        if unknown:
            raise TypeError(f"{self.kind} '{name}': unknown properties {unknown} (known: {sorted(known)})")
        aggregation = properties.get("loss_aggregation")
        if aggregation is not None and aggregation not in LOSS_AGGREGATIONS:
            raise ValueError(f"{self.kind} '{name}': loss_aggregation {aggregation!r} is not one of "
                             f"{', '.join(LOSS_AGGREGATIONS)}")

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            old = self._entries.get(name)
            # The same function registered again (its module imported twice) replaces itself; another clashes.
            if old is not None and _qualified(old.fn) != _qualified(fn):
                raise ValueError(f"{self.kind} '{name}' is already registered by {_qualified(old.fn)}")
            self._entries[name] = self.entry_type(name=name, fn=fn, description=_first_paragraph(fn.__doc__),
                                                  **properties)
            return fn

        return decorate

    def get(self, name: str) -> EntryT:
        """The entry of `name` (a registered name, or a plugin's 'module:function'); ValueError if unknown."""
        entry = self._entries.get(name) or self._aliases.get(name)
        if entry is None and ":" in name:
            entry = self._load(name)
        if entry is None:
            raise ValueError(f"unknown {self.kind} '{name}' (known: {', '.join(self._entries)}, "
                             f"or a registered 'module:function')")
        return entry

    def check(self, name: str) -> str:
        """`name` if it resolves (a field validator's body), else ValueError naming the known ones."""
        self.get(name)
        return name

    def names(self, **where: Any) -> tuple[str, ...]:
        """Registered names (not plugin aliases), those whose properties equal `where` if given."""
        return tuple(n for n, e in self._entries.items() if all(getattr(e, k) == v for k, v in where.items()))

    def describe(self) -> str:
        """"'name' (properties) description; ..." for the schema's field descriptions (config-reference.md)."""
        return "; ".join(f"'{e.name}' {_properties(e)}{e.description.rstrip('.')}".rstrip()
                         for e in self._entries.values())

    def __iter__(self) -> Iterator[EntryT]:
        return iter(list(self._entries.values()))

    def _load(self, spec: str) -> EntryT:
        module_name, _, attr = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"{self.kind} '{spec}' cannot be loaded: {err}") from None
        entry = next((e for e in self._entries.values() if e.fn is fn), None)
        if entry is None:
            raise ValueError(f"{self.kind} '{spec}' is not registered: decorate it with "
                             f"@{self.symbol}.register(name, ...) from {self.home}")
        self._aliases[spec] = entry
        return entry


def _properties(entry: Entry) -> str:
    """'(group, loss_aggregation 'x') ': the properties an entry sets to other than their defaults."""
    parts = []
    for f in fields(entry)[len(fields(Entry)):]:
        value = getattr(entry, f.name)
        if value != f.default and not callable(value):  # a check function says nothing in a description
            parts.append(f.name if value is True else f"{f.name} {value!r}")
    return f"({', '.join(parts)}) " if parts else ""


def _qualified(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def import_all(package: str, path: list[str]) -> None:
    """Import every module of a built-ins folder (its __init__ calls this), so each one registers itself."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")


ADVANTAGES: Registry[AdvantageEstimator] = Registry("advantage estimator", "ppo.advantage", "ADVANTAGES",
                                                    AdvantageEstimator)
POLICY_LOSSES: Registry[PolicyLoss] = Registry("policy loss", "ppo.policy_loss", "POLICY_LOSSES", PolicyLoss)
KL_ESTIMATORS: Registry[KLEstimator] = Registry("KL estimator", "ppo.kl.estimator", "KL_ESTIMATORS", KLEstimator)
