"""An actor's CUDA index comes from Ray's assignment (workers/devices.py), with or without
RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES. Inputs are what ray.get_gpu_ids() and the actor's
environment hold in each case (Ray 2.60: worker.get_accelerator_ids_for_accelerator_resource)."""

from __future__ import annotations

import pytest

from rlhf_dist.workers.devices import NOSET_ENV, local_device_index


def test_no_gpu_means_no_cuda_index():
    assert local_device_index([], {}) is None
    assert local_device_index([], {"CUDA_VISIBLE_DEVICES": "0,1", NOSET_ENV: "1"}) is None


def test_ray_narrows_cuda_visible_devices_so_the_actor_gpu_is_index_0():
    # The actor got node GPU 5; Ray set CUDA_VISIBLE_DEVICES=5 in its process.
    assert local_device_index([5], {"CUDA_VISIBLE_DEVICES": "5"}) == 0
    assert local_device_index(["5"], {"CUDA_VISIBLE_DEVICES": "5"}) == 0
    # A TP-2 engine got GPUs 6 and 3 (Ray lists them from a set: any order) -> its first device is cuda:0.
    assert local_device_index(["6", "3"], {"CUDA_VISIBLE_DEVICES": "3,6"}) == 0
    # The node had CUDA_VISIBLE_DEVICES by UUID when Ray started: the ids are those UUIDs.
    assert local_device_index(["GPU-bb"], {"CUDA_VISIBLE_DEVICES": "GPU-bb"}) == 0


def test_noset_uses_the_assigned_gpu_in_the_node_numbering():
    env = {NOSET_ENV: "1"}
    assert local_device_index([3], env) == 3  # no CUDA_VISIBLE_DEVICES: every GPU visible, id = index
    assert local_device_index([7, 6], env) == 6  # several: the lowest
    assert local_device_index(["2"], {NOSET_ENV: "true"}) == 2  # Ray reads "1" and "true" (any case)
    assert local_device_index(["2"], {NOSET_ENV: "True"}) == 2
    assert local_device_index(["2"], {NOSET_ENV: "0"}) == 0  # "0": not set, Ray narrowed the variable


def test_noset_maps_ids_through_the_inherited_cuda_visible_devices():
    # The node started Ray with CUDA_VISIBLE_DEVICES=4,5,6,7; NOSET keeps it; Ray's ids are its entries.
    env = {NOSET_ENV: "1", "CUDA_VISIBLE_DEVICES": "4,5,6,7"}
    assert local_device_index(["6"], env) == 2  # physical GPU 6 is cuda:2 in this process
    assert local_device_index(["7", "5"], env) == 1
    uuids = {NOSET_ENV: "1", "CUDA_VISIBLE_DEVICES": "GPU-aa, GPU-bb"}  # spaces around entries are ignored
    assert local_device_index(["GPU-bb"], uuids) == 1


def test_noset_with_ids_that_cannot_be_mapped_fails_in_one_line():
    with pytest.raises(ValueError, match="lists none of them: start Ray with the same CUDA_VISIBLE_DEVICES"):
        local_device_index(["3"], {NOSET_ENV: "1", "CUDA_VISIBLE_DEVICES": "0,1"})
    with pytest.raises(ValueError, match="by UUID, but CUDA_VISIBLE_DEVICES is not set"):
        local_device_index(["GPU-aa"], {NOSET_ENV: "1"})
