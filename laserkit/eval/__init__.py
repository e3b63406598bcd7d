"""Scores and their uncertainty: ``evaluate`` (a task on a model, validation/test splits),
the causal and masked scorers, streamed evaluation that resumes, intervals and paired stats."""
