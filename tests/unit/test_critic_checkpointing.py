"""critic.gradient_checkpointing reaches the critic's backbone and changes what backward does."""

from __future__ import annotations

from peft import PeftModel
import pytest
import torch

from rlhf_dist.config.schema_parts import CriticConfig, LoRAConfig
from rlhf_dist.models import load_critic


def _layer_forwards(model, train: bool) -> int:
    """Forward calls of decoder layer 0 during one forward (+ backward when train) of the critic."""
    calls = []
    backbone = model.backbone.get_base_model() if isinstance(model.backbone, PeftModel) else model.backbone
    layer = backbone.layers[0]
    handle = layer.register_forward_pre_hook(lambda *_: calls.append(1))  # recompute may stop early
    model.train()
    ids = torch.randint(3, 259, (2, 9))
    values = model.token_scores(ids, torch.ones_like(ids))
    if train:
        values.sum().backward()
    handle.remove()
    return len(calls)


@pytest.mark.parametrize("lora", [False, True])
def test_checkpointing_flag_reaches_the_backbone_and_recomputes(tiny_llama_dir, lora):
    torch.manual_seed(0)
    lora_cfg = LoRAConfig(enabled=lora, r=2)
    on = load_critic(CriticConfig(gradient_checkpointing=True, lora=lora_cfg), tiny_llama_dir)
    off = load_critic(CriticConfig(gradient_checkpointing=False, lora=lora_cfg), tiny_llama_dir)
    backbone = on.backbone.get_base_model() if lora else on.backbone
    assert backbone.is_gradient_checkpointing
    assert not (off.backbone.get_base_model() if lora else off.backbone).is_gradient_checkpointing
    # checkpointing runs each layer again in backward; without it, once
    assert _layer_forwards(on, train=True) == 2
    assert _layer_forwards(off, train=True) == 1
    # and the trainable parameters still get gradients (LoRA: adapters and head only)
    grads = {n: p.grad for n, p in on.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert any(".lora_" in n for n in grads) == lora


def test_checkpointing_gives_the_same_gradients(tiny_llama_dir):
    grads = []
    for flag in (True, False):
        torch.manual_seed(0)
        model = load_critic(CriticConfig(gradient_checkpointing=flag), tiny_llama_dir)
        model.train()
        ids = torch.randint(3, 259, (2, 9), generator=torch.Generator().manual_seed(1))
        model.token_scores(ids, torch.ones_like(ids)).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
