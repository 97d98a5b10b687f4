"""Reward functions used by the integration tests (imported by name from configs)."""


def explode(prompts, responses):
    raise RuntimeError("reward server on fire")


def overflow(prompts, responses):
    return [1e39] * len(responses)  # finite in Python, inf once a float32 tensor: poisons the loss
