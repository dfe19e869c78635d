"""Hyper-parameter search with Optuna: the search space, the objective, the study."""
