"""Which CUDA device an actor uses, from what Ray assigned it (pure: no Ray, no CUDA here).

Ray normally sets each GPU actor's CUDA_VISIBLE_DEVICES to the GPUs it reserved, so the actor's GPU is
cuda:0 in its own numbering. With RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES set, Ray leaves the
variable alone: the process sees every GPU of the node, and its GPU is the one ray.get_gpu_ids() names.
A hard-coded 0 would put every rank of a node on its first GPU there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

NOSET_ENV = "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true")  # how Ray reads it (ray._common.utils.env_bool)


def local_device_index(gpu_ids: Sequence[int | str], environ: Mapping[str, str]) -> int | None:
    """The CUDA index (this process's numbering) of the actor's first GPU; None when Ray gave it no GPU.

    `gpu_ids` is ray.get_gpu_ids(): ids as CUDA_VISIBLE_DEVICES spells them (numbers or UUIDs) where
    that was set when Ray started, else node indices; in no fixed order. An id's place in this process's
    CUDA_VISIBLE_DEVICES is its CUDA index; with no such variable (NOSET, all GPUs visible) the id is
    the index. Several GPUs (a TP rollout engine): the lowest index, i.e. cuda:0 when Ray set the variable.
    """
    ids = [str(i).strip() for i in gpu_ids]
    if not ids:
        return None
    visible = [v.strip() for v in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    noset = _flag(environ.get(NOSET_ENV))
    if visible:
        places = [visible.index(i) for i in ids if i in visible]
        if places:
            return min(places)
        if not noset:  # Ray narrowed the variable to this actor's GPUs: its first is cuda:0
            return 0
        raise ValueError(f"{NOSET_ENV} is set and Ray assigned GPUs {ids}, but CUDA_VISIBLE_DEVICES "
                         f"({','.join(visible)}) lists none of them: start Ray with the same CUDA_VISIBLE_DEVICES")
    if not noset:
        return 0
    if not all(i.isdigit() for i in ids):
        raise ValueError(f"{NOSET_ENV} is set and Ray assigned GPUs {ids} by UUID, but CUDA_VISIBLE_DEVICES is "
                         "not set to map them to indices: set it on the node before `ray start`")
    return min(int(i) for i in ids)
