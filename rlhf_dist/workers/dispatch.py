"""How a worker method's call is spread over a group's ranks, and how their answers are joined.

A worker declares it on the method; every role group of that worker then has a method of the same name,
signature and docstring that starts the call on the ranks and returns a Pending (workers/group.py):

    class ReferenceWorker(RoleWorker):
        @dispatch(Dispatch.SHARD_BATCH, gather=Gather.CONCAT)
        def logprobs(self, inputs: ModelInputs) -> torch.Tensor: ...

    reference_group.logprobs(inputs).result()   # rank i scores inputs.shard(n)[i]; answers joined with torch.cat

So a new remote call is one decorated worker method: nothing is written a second time in the group, and a
group cannot drift from its worker (tests/unit/test_dispatch.py compares every group with its worker).
After veRL's @register(dispatch_mode=...) (verl/single_controller/base/decorator.py), cut down to the
modes this system uses. No Ray here: the group starts the calls.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import Any

_MARK = "__rlhf_dispatch__"  # attribute a declared worker method carries (its _Spec)


class Dispatch(Enum):
    """Which ranks a call starts on, and with which arguments."""

    ONE_TO_ALL = "every rank, the same arguments"
    RANK0 = "rank 0 only"
    SHARD_BATCH = "a TensorBatch split with .shard(n), part i on rank i; other arguments to every rank"
    SHARD_LIST = "lists split into n contiguous near-equal chunks, chunk i on rank i; other arguments to every rank"


class Gather(Enum):
    """What `Pending.result()` makes of the answers of the ranks called (in rank order)."""

    NONE = "None"
    FIRST = "rank 0's answer"
    LIST = "one answer per rank"
    FLATTEN = "the ranks' lists joined in rank order"
    CONCAT = "tensors (or TensorBatches, or tuples of them) concatenated in rank order"


@dataclass(frozen=True)
class _Spec:
    mode: Dispatch
    gather: Gather
    shard: tuple[str, ...]
    put_once: bool


def dispatch(mode: Dispatch, gather: Gather = Gather.NONE, shard: tuple[str, ...] = (),
             put_once: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a worker method as a group call (the method itself is returned unchanged).

    shard: the parameters SHARD_BATCH / SHARD_LIST split (default: the first one). put_once (ONE_TO_ALL):
    the arguments go into Ray's object store once and every rank reads that copy (large payloads)."""

    def declare(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = _parameters(fn)
        names = shard or ((params[0].name,) if params and mode in (Dispatch.SHARD_BATCH, Dispatch.SHARD_LIST) else ())
        where = f"@dispatch on {fn.__qualname__}"
        if mode in (Dispatch.SHARD_BATCH, Dispatch.SHARD_LIST) and not names:
            raise TypeError(f"{where}: {mode.name} needs a parameter to split")
        if mode in (Dispatch.ONE_TO_ALL, Dispatch.RANK0) and names:
            raise TypeError(f"{where}: {mode.name} splits nothing, shard={names} makes no sense")
        if mode is Dispatch.SHARD_BATCH and len(names) != 1:
            raise TypeError(f"{where}: SHARD_BATCH splits one batch, got {names}")
        unknown = [n for n in names if n not in {p.name for p in params}]
        if unknown:
            raise TypeError(f"{where}: shard names {unknown}, which are not parameters of {fn.__name__}")
        if put_once and mode is not Dispatch.ONE_TO_ALL:
            raise TypeError(f"{where}: put_once applies to ONE_TO_ALL (the same arguments on every rank)")
        if mode is Dispatch.RANK0 and gather not in (Gather.FIRST, Gather.NONE):
            raise TypeError(f"{where}: RANK0 has one answer; gather FIRST or NONE, not {gather.name}")
        setattr(fn, _MARK, _Spec(mode, gather, tuple(names), put_once))
        return fn

    return declare


def _parameters(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    """The parameters after self; a group call passes them by name, so no *args / **kwargs."""
    params = list(inspect.signature(fn).parameters.values())[1:]
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY) for p in params):
        raise TypeError(f"@dispatch on {fn.__qualname__}: *args, **kwargs and positional-only parameters "
                        "cannot be passed to the ranks by name")
    return params


@dataclass(frozen=True)
class Declaration:
    """A worker method's declared dispatch, with the signature of the method the ranks run."""

    name: str
    mode: Dispatch
    gather: Gather
    shard: tuple[str, ...]
    put_once: bool
    signature: inspect.Signature  # of the worker method, self included
    doc: str

    def per_rank(self, n: int, args: tuple, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        """The keyword arguments of each rank called: n dicts, or one (rank 0's) for RANK0."""
        try:
            arguments = dict(self.signature.bind(None, *args, **kwargs).arguments)
        except TypeError as err:
            raise TypeError(f"{self.name}(): {err}") from None
        arguments.pop(next(iter(self.signature.parameters)))  # self
        if self.mode is Dispatch.RANK0:
            return [arguments]
        if self.mode is Dispatch.ONE_TO_ALL:
            return [arguments] * n
        parts = {p: self._split(p, arguments[p], n) for p in self.shard if p in arguments}
        lengths = {p: sum(len(chunk) for chunk in chunks) for p, chunks in parts.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{self.name}(): the split arguments differ in length {lengths}")
        return [{**arguments, **{p: chunks[i] for p, chunks in parts.items()}} for i in range(n)]

    def _split(self, param: str, value: Any, n: int) -> list:
        if self.mode is Dispatch.SHARD_BATCH:
            if not hasattr(value, "shard"):
                raise TypeError(f"{self.name}(): '{param}' must be a TensorBatch to split over ranks, "
                                f"got {type(value).__name__}")
            return value.shard(n)
        if not isinstance(value, list):
            raise TypeError(f"{self.name}(): '{param}' must be a list to split over ranks, got {type(value).__name__}")
        return contiguous(value, n)

    def join(self, answers: list) -> Any:
        """The gathered result of the ranks' answers (rank order)."""
        if self.gather is Gather.NONE:
            return None
        if self.gather is Gather.FIRST:
            return answers[0]
        if self.gather is Gather.LIST:
            return answers
        if self.gather is Gather.FLATTEN:
            return [x for part in answers for x in part]
        return _concat(answers)

    def group_signature(self) -> inspect.Signature:
        """The worker method's signature with the group's return type (what the generated group method shows)."""
        ret = self.signature.return_annotation
        if ret is inspect.Signature.empty:
            ret = "Any"
        elif not isinstance(ret, str):
            ret = getattr(ret, "__name__", ret)
        gathered = {Gather.NONE: "None", Gather.LIST: f"list[{ret}]"}.get(self.gather, ret)
        return self.signature.replace(return_annotation=f"Pending[{gathered}]")


def contiguous(items: list, n: int) -> list[list]:
    """n contiguous chunks of `items`, the first len % n one longer (torch.tensor_split's sizes); order kept."""
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (i < extra)
        out.append(items[start:end])
        start = end
    return out


def _concat(answers: list) -> Any:
    first = answers[0]
    if isinstance(first, tuple):
        return tuple(_concat(list(parts)) for parts in zip(*answers))
    if hasattr(type(first), "concat"):  # a TensorBatch
        return type(first).concat(answers)
    import torch

    return torch.cat(answers)


@cache
def declarations(worker_cls: type) -> dict[str, Declaration]:
    """Every declared method of `worker_cls`, by name. An override inherits the declaration of the method it
    overrides; the signature is the override's (what the ranks run)."""
    out = {}
    for name in dir(worker_cls):
        spec = next((getattr(klass.__dict__[name], _MARK) for klass in worker_cls.__mro__
                     if name in klass.__dict__ and hasattr(klass.__dict__[name], _MARK)), None)
        if spec is None:
            continue
        fn = getattr(worker_cls, name)
        params = {p.name for p in _parameters(fn)}
        if not set(spec.shard) <= params:
            raise TypeError(f"{worker_cls.__name__}.{name} overrides a declared method without its parameters "
                            f"{sorted(set(spec.shard) - params)}")
        out[name] = Declaration(name, spec.mode, spec.gather, spec.shard, spec.put_once, inspect.signature(fn),
                                inspect.getdoc(fn) or "")
    return out


def declaration(worker_cls: type, name: str) -> Declaration:
    found = declarations(worker_cls).get(name)
    if found is None:
        raise AttributeError(f"{worker_cls.__name__}.{name} is not a declared group call (decorate the worker "
                             f"method with @dispatch, workers/dispatch.py); declared: "
                             f"{sorted(declarations(worker_cls))}")
    return found


def group_method(decl: Declaration) -> Callable[..., Any]:
    """The group's method for one declared worker method: `self.invoke(name, ...)` with the worker's
    name, parameters and docstring."""
    name = decl.name

    def call(self, *args: Any, **kwargs: Any) -> Any:
        return self.invoke(name, *args, **kwargs)

    call.__name__ = call.__qualname__ = name
    summary = f"Group call: {decl.mode.value}; result: {decl.gather.value}."
    call.__doc__ = f"{decl.doc}\n\n{summary}" if decl.doc else summary
    call.__signature__ = decl.group_signature()  # type: ignore[attr-defined]
    call.__dispatch_generated__ = True  # type: ignore[attr-defined]
    return call


def expose_declared(group_cls: type, worker_cls: type) -> None:
    """Give `group_cls` a method for every declared method of `worker_cls`, except those it (or a base)
    writes out itself (a call that needs more than a declaration; each says why)."""
    for name, decl in declarations(worker_cls).items():
        current = getattr(group_cls, name, None)
        if current is None or getattr(current, "__dispatch_generated__", False):
            setattr(group_cls, name, group_method(decl))


def is_generated(method: Any) -> bool:
    return bool(getattr(method, "__dispatch_generated__", False))
