"""Checks for reward clipping and RunningMeanStd."""

import json
import math

import pytest
import torch
from torch.testing import assert_close

from rlhf_dist.algo import RunningMeanStd, clip_rewards


def test_clip_rewards():
    s = torch.tensor([-5.0, -0.5, 0.0, 2.0, 7.0])
    assert_close(clip_rewards(s, 1.0), torch.tensor([-1.0, -0.5, 0.0, 1.0, 1.0]))
    assert clip_rewards(s, None) is s
    with pytest.raises(ValueError):
        clip_rewards(s, -1.0)


def test_running_stats_by_hand():
    rms = RunningMeanStd()
    rms.update(torch.tensor([1.0, 2.0, 3.0]))
    rms.update(torch.tensor([5.0]))
    # values 1,2,3,5: mean 11/4 = 2.75; deviations -1.75,-0.75,0.25,2.25
    # squares 3.0625+0.5625+0.0625+5.0625 = 8.75 -> population var 8.75/4 = 2.1875
    assert rms.count == 4
    assert rms.mean == pytest.approx(2.75)
    assert rms.var == pytest.approx(2.1875)
    assert rms.std == pytest.approx(math.sqrt(2.1875))
    # normalize(5) = (5 - 2.75) / sqrt(2.1875) = 1.521278
    out = rms.normalize(torch.tensor([5.0]))
    assert_close(out, torch.tensor([2.25 / math.sqrt(2.1875)]))
    assert_close(rms.normalize(torch.tensor([5.0]), shift_mean=False),
                 torch.tensor([5.0 / math.sqrt(2.1875)]))


def test_running_stats_match_concatenation():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, generator=g) * 3 + 7 for n in (3, 1, 50, 17)]
    batches.append(torch.empty(0))  # empty update is a no-op
    batches.append(torch.randn(2, 4, generator=g))  # any shape is flattened
    rms = RunningMeanStd()
    for b in batches:
        rms.update(b)
    allx = torch.cat([b.reshape(-1) for b in batches]).double()
    assert rms.count == allx.numel()
    assert rms.mean == pytest.approx(allx.mean().item(), rel=1e-9)
    assert rms.var == pytest.approx(allx.var(correction=0).item(), rel=1e-9)


def test_running_stats_json_round_trip():
    rms = RunningMeanStd()
    assert rms.var == 0.0 and rms.count == 0
    rms.update(torch.tensor([1.0, 4.0]))
    other = RunningMeanStd()
    other.load_state_dict(json.loads(json.dumps(rms.state_dict())))
    assert (other.mean, other.var, other.count) == (rms.mean, rms.var, rms.count)
    other.update(torch.tensor([7.0]))
    # 1,4,7: mean 4, population var (9+0+9)/3 = 6
    assert other.mean == pytest.approx(4.0)
    assert other.var == pytest.approx(6.0)
