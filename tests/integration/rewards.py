"""Reward functions used by the integration tests (imported by name from configs)."""


def explode(prompts, responses):
    raise RuntimeError("reward server on fire")


def overflow(prompts, responses):
    return [1e39] * len(responses)  # finite in Python, inf once a float32 tensor: poisons the loss


def has_vowel(prompts, responses):
    """1 when the response has a vowel, else 0: coarse, so a prompt's samples often all score alike."""
    return [float(any(c in "aeiouAEIOU" for c in r)) for r in responses]
