"""Optuna's TPE sampler, reseeded per trial. Imported only when a study is opened (optuna is imported here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState


def trial_seed(seed: int, number: int) -> int:
    """A 32-bit seed for trial `number` of a study seeded with `seed`."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, number]).generate_state(1)[0])


class TrialSeededTPE(optuna.samplers.BaseSampler):
    """TPE whose random draws for trial n come from trial_seed(seed, n), not from one generator per process:
    processes seeded alike would otherwise propose the same first trials, and a study continued after
    Ctrl-C would repeat its first random trials. One process with a fixed seed gives the same study each time."""

    def __init__(self, seed: int, n_startup_trials: int = 10) -> None:
        self.seed, self.n_startup_trials = seed, n_startup_trials
        self._tpe: dict[int, optuna.samplers.TPESampler] = {}

    def _for(self, trial: FrozenTrial) -> optuna.samplers.TPESampler:
        if trial.number not in self._tpe:
            # constant_liar: running trials count as bad guesses, so that parallel trials spread out.
            tpe = optuna.samplers.TPESampler(
                seed=trial_seed(self.seed, trial.number), n_startup_trials=self.n_startup_trials, constant_liar=True
            )
            self._tpe = {trial.number: tpe}
        return self._tpe[trial.number]

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._for(trial).after_trial(study, trial, state, values)
