"""Reward functions used by the integration tests (imported by name from configs)."""


def explode(prompts, responses):
    raise RuntimeError("reward server on fire")


def overflow(prompts, responses):
    return [1e39] * len(responses)  # finite in Python, inf once a float32 tensor: poisons the loss


def has_vowel(prompts, responses):
    """1 when the response has a vowel, else 0: coarse, so a prompt's samples often all score alike."""
    return [float(any(c in "aeiouAEIOU" for c in r)) for r in responses]


def slow_lowercase(prompts, responses):
    """The tiny preset's reward, one second late: a step lasts long enough for a test to act between steps."""
    import time

    from rlhf_dist.eval.rules import lowercase_fraction_reward

    time.sleep(1.0)
    return lowercase_fraction_reward(prompts, responses)
