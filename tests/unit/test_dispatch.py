"""Declared group calls (workers/dispatch.py): how arguments are split over ranks and answers joined, and
that every role group exposes exactly its worker's declared methods (no hand-written drift)."""

from __future__ import annotations

import inspect

import pytest
import torch

from rlhf_dist.backends.sync.base import EngineSide, PolicySide
from rlhf_dist.backends.sync.transports.lora import AdapterSink, AdapterSource
from rlhf_dist.data.experience import ModelInputs
from rlhf_dist.workers import evaluation, role_groups, supervised  # noqa: F401  (every group class defined)
from rlhf_dist.workers.dispatch import Dispatch, Gather, contiguous, declaration, declarations, dispatch, is_generated
from rlhf_dist.workers.group import ActorGroup
from rlhf_dist.workers.role_groups import PolicyGroup, RoleGroup, RolloutGroup


class Toy:
    @dispatch(Dispatch.ONE_TO_ALL, gather=Gather.LIST)
    def load(self, path: str, version: int = 0) -> int:
        """Load something."""
        return version

    @dispatch(Dispatch.RANK0, gather=Gather.FIRST)
    def address(self) -> tuple[str, int]:
        return "h", 1

    @dispatch(Dispatch.SHARD_LIST, gather=Gather.FLATTEN, shard=("prompts", "responses"))
    def score(self, prompts: list[str], responses: list[str], scale: float = 1.0) -> list[float]:
        return [scale] * len(prompts)

    @dispatch(Dispatch.SHARD_BATCH, gather=Gather.CONCAT)
    def logprobs(self, inputs: ModelInputs) -> torch.Tensor:
        return inputs.sequences.float()

    def not_a_call(self) -> None: ...


class ToyChild(Toy):
    def load(self, path: str, version: int = 0, strict: bool = True) -> int:  # inherits the declaration
        return version


def test_contiguous_chunks_have_tensor_split_sizes_and_keep_order():
    assert contiguous([1, 2, 3, 4, 5], 2) == [[1, 2, 3], [4, 5]]
    assert contiguous([1, 2], 3) == [[1], [2], []]
    assert contiguous(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert [len(c) for c in contiguous(list(range(7)), 3)] == [len(t) for t in torch.tensor_split(torch.arange(7), 3)]


def test_declarations_are_found_and_inherited_with_the_overrides_signature():
    assert set(declarations(Toy)) == {"load", "address", "score", "logprobs"}
    child = declaration(ToyChild, "load")
    assert child.mode is Dispatch.ONE_TO_ALL and list(child.signature.parameters)[1:] == ["path", "version", "strict"]
    with pytest.raises(AttributeError, match=r"Toy.not_a_call is not a declared group call.*@dispatch"):
        declaration(Toy, "not_a_call")


def test_one_to_all_and_rank0_pass_every_argument_by_name():
    assert declaration(Toy, "load").per_rank(3, ("/m",), {"version": 2}) == [{"path": "/m", "version": 2}] * 3
    assert declaration(Toy, "address").per_rank(3, (), {}) == [{}]  # rank 0 only
    with pytest.raises(TypeError, match=r"load\(\): missing a required argument: 'path'"):
        declaration(Toy, "load").per_rank(2, (), {})


def test_shard_list_splits_the_named_lists_together_and_repeats_the_rest():
    parts = declaration(Toy, "score").per_rank(2, (["a", "b", "c"], ["x", "y", "z"]), {"scale": 2.0})
    assert parts == [{"prompts": ["a", "b"], "responses": ["x", "y"], "scale": 2.0},
                     {"prompts": ["c"], "responses": ["z"], "scale": 2.0}]
    with pytest.raises(ValueError, match=r"score\(\): the split arguments differ in length"):
        declaration(Toy, "score").per_rank(2, (["a", "b"], ["x"]), {})
    with pytest.raises(TypeError, match=r"score\(\): 'prompts' must be a list"):
        declaration(Toy, "score").per_rank(2, (("a",), ["x"]), {})


def test_shard_batch_gives_rank_i_shard_i_and_concat_restores_the_batch():
    seqs = torch.arange(15).view(5, 3)
    inputs = ModelInputs(seqs, torch.ones(5, 3, dtype=torch.long), torch.ones(5, 2))
    decl = declaration(Toy, "logprobs")
    parts = decl.per_rank(2, (inputs,), {})
    assert [len(p["inputs"]) for p in parts] == [3, 2]
    assert torch.equal(parts[1]["inputs"].sequences, seqs[3:])
    assert torch.equal(decl.join([p["inputs"].sequences.float() for p in parts]), seqs.float())
    with pytest.raises(TypeError, match=r"logprobs\(\): 'inputs' must be a TensorBatch"):
        decl.per_rank(2, (seqs,), {})


def test_gathers_join_answers_in_rank_order():
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0], [5.0, 6.0]])
    concat = declaration(Toy, "logprobs").join
    assert torch.equal(concat([a, b]), torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    pairs = concat([(a, a[:, :1]), (b, b[:, :1])])  # tuples join element-wise (log-probs and entropy)
    assert torch.equal(pairs[1], torch.tensor([[1.0], [3.0], [5.0]]))
    assert declaration(Toy, "score").join([[1.0, 2.0], [3.0]]) == [1.0, 2.0, 3.0]
    assert declaration(Toy, "load").join([7, 8]) == [7, 8]
    assert declaration(Toy, "address").join([("h", 1)]) == ("h", 1)


@pytest.mark.parametrize("decorate, message", [
    (lambda: dispatch(Dispatch.SHARD_LIST, shard=("nope",))(lambda self, items: items), "not parameters"),
    (lambda: dispatch(Dispatch.RANK0, gather=Gather.LIST)(lambda self: 0), "RANK0 has one answer"),
    (lambda: dispatch(Dispatch.SHARD_LIST, put_once=True)(lambda self, items: items), "put_once applies"),
    (lambda: dispatch(Dispatch.ONE_TO_ALL)(lambda self, *items: items), r"\*args"),
    (lambda: dispatch(Dispatch.ONE_TO_ALL, shard=("x",))(lambda self, x: x), "splits nothing"),
])
def test_a_bad_declaration_fails_at_import_time(decorate, message):
    with pytest.raises(TypeError, match=message):
        decorate()


def _group_classes() -> list[type]:
    found, todo = [], [RoleGroup]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.__module__.startswith("rlhf_dist.") and hasattr(cls, "worker"):  # not this file's toys
            found.append(cls)
    return found


def exposure_problems(group_cls: type) -> list[str]:
    """How `group_cls`'s public methods differ from its worker's declared ones (names and parameters)."""
    exposed = {name: fn for klass in reversed(group_cls.__mro__)
               if issubclass(klass, ActorGroup) and klass is not ActorGroup
               for name, fn in vars(klass).items() if inspect.isfunction(fn) and not name.startswith("_")}
    declared = declarations(group_cls.worker)
    problems = [f"{group_cls.__name__}.{n} is not declared by {group_cls.worker.__name__}"
                for n in sorted(set(exposed) - set(declared))]
    problems += [f"{group_cls.__name__} lacks {group_cls.worker.__name__}.{n}"
                 for n in sorted(set(declared) - set(exposed))]
    for name in set(exposed) & set(declared):
        group_params = list(inspect.signature(getattr(group_cls, name)).parameters)[1:]
        if group_params != list(declared[name].signature.parameters)[1:]:
            problems.append(f"{group_cls.__name__}.{name}{group_params} differs from the worker's parameters")
    return problems


def test_every_group_exposes_exactly_its_workers_declared_methods():
    classes = _group_classes()
    assert {c.__name__ for c in classes} >= {"PolicyGroup", "CriticGroup", "ReferenceGroup", "RewardGroup",
                                             "RolloutGroup", "SFTGroup", "RewardTrainGroup", "PolicySamplers",
                                             "PolicyScorers", "EvalRewardGroup"}
    assert [p for cls in classes for p in exposure_problems(cls)] == []


def test_the_check_fails_on_a_hand_written_call_the_worker_does_not_declare():
    class Drifted(RolloutGroup):
        def rendezvous_engines(self) -> None:  # a wrapper with no declaration behind it
            ...

    class Missing(RoleGroup):
        role_name, worker = "toy", Toy

    del Missing.score  # as if a hand-written group forgot one
    assert exposure_problems(Drifted) == ["Drifted.rendezvous_engines is not declared by RolloutWorker"]
    assert exposure_problems(Missing) == ["Missing lacks Toy.score"]


def test_generated_methods_read_like_the_worker_and_written_out_ones_say_why():
    logprobs = PolicyGroup.logprobs
    assert is_generated(logprobs) and logprobs.__name__ == "logprobs"
    assert str(inspect.signature(logprobs)) == "(self, inputs: 'ModelInputs') -> 'Pending[torch.Tensor]'"
    assert "current policy" in logprobs.__doc__ and "split with .shard(n)" in logprobs.__doc__
    assert inspect.signature(PolicyGroup.export_hf).return_annotation == "Pending[Path]"  # rank 0's answer
    assert inspect.signature(PolicyGroup.train_ppo).return_annotation == "Pending[list[TrainStats]]"
    assert not is_generated(PolicyGroup.weight_bucket) and "Written out" in PolicyGroup.weight_bucket.__doc__


@pytest.mark.parametrize("protocol, group", [(PolicySide, PolicyGroup), (EngineSide, RolloutGroup),
                                             (AdapterSource, PolicyGroup), (AdapterSink, RolloutGroup)])
def test_the_sync_protocols_match_the_groups(protocol, group):
    """backends/sync types its calls with Protocols; they must say what the derived groups take."""
    methods = [n for n, fn in vars(protocol).items() if inspect.isfunction(fn) and not n.startswith("_")]
    assert methods
    for name in methods:
        assert hasattr(group, name), f"{group.__name__} has no {name}"
        assert (list(inspect.signature(getattr(protocol, name)).parameters)
                == list(inspect.signature(getattr(group, name)).parameters)), name
