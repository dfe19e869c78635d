"""TPE reseeded per trial: draws depend on (seed, trial number), never on which process asks."""

from __future__ import annotations

import optuna

from imgcls.tune.sampler import TrialSeededTPE, trial_seed


def _draws(sampler: optuna.samplers.BaseSampler, n: int = 4) -> list[float]:
    study = optuna.create_study(sampler=sampler)
    values = []
    for _ in range(n):
        trial = study.ask()
        values.append(trial.suggest_float("x", 0.0, 1.0))
        study.tell(trial, values[-1])
    return values


def test_one_seed_gives_one_study_and_other_seeds_differ() -> None:
    first = _draws(TrialSeededTPE(0))
    assert _draws(TrialSeededTPE(0)) == first
    assert len(set(first)) == 4
    assert _draws(TrialSeededTPE(1)) != first
    assert trial_seed(0, 1) != trial_seed(0, 0) != trial_seed(1, 0)


def test_tpe_takes_over_after_the_startup_trials() -> None:
    # The same seeds, so the same random startup trials; then TPE models them and the draws part ways.
    random_only, modelled = _draws(TrialSeededTPE(0, n_startup_trials=10), 6), _draws(TrialSeededTPE(0, 3), 6)
    assert random_only[:3] == modelled[:3] and random_only[3:] != modelled[3:]


def test_two_processes_seeded_alike_propose_different_trials() -> None:
    storage = optuna.storages.InMemoryStorage()
    plain = [optuna.create_study(storage=storage, study_name="plain", sampler=optuna.samplers.TPESampler(seed=0))]
    plain.append(optuna.load_study(storage=storage, study_name="plain", sampler=optuna.samplers.TPESampler(seed=0)))
    ours = [optuna.create_study(storage=storage, study_name="ours", sampler=TrialSeededTPE(0))]
    ours.append(optuna.load_study(storage=storage, study_name="ours", sampler=TrialSeededTPE(0)))
    plain_x = [study.ask().suggest_float("x", 0.0, 1.0) for study in plain]
    ours_x = [study.ask().suggest_float("x", 0.0, 1.0) for study in ours]
    assert plain_x[0] == plain_x[1]  # the problem: one generator per process, seeded alike
    assert ours_x[0] != ours_x[1]
    assert ours_x[0] == _draws(TrialSeededTPE(0), 1)[0]  # trial 0 is the same whoever runs it
