"""Scores and their uncertainty: ``evaluate`` (a task on a model, validation/test splits by the
one rule of splits.py), the scorer interface (scorer.py) with its causal (causal.py, on the
primitives of scoring.py) and masked (masked.py) implementations, lm-eval's model side
(harness.py), streamed evaluation that resumes, intervals and paired stats."""
