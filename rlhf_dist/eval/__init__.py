"""Evaluation: rule-based rewards/judges and (later) reports."""
