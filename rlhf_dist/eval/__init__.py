"""Evaluation: held-out judges and rules, policy eval (evaluate.py), run reports, seed experiments."""
