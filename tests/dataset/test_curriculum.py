"""Curriculum task selection: the drawn task frequencies follow P(j) ~ exp(score_j / tau) for both
weightings (hardest: 0.5 - s_j; informative: the chance a group has both outcomes), the estimates
follow the EMA, trials cycle within a task, and the state resumes exactly."""

import json

import numpy as np
import pytest
from verl.utils.dataset.curriculum import NEUTRAL_SUCCESS, CurriculumSampler, curriculum_probabilities

# chi-square critical value, 3 degrees of freedom, alpha = 0.001 (a table value: no scipy needed)
CHI2_3DOF_999 = 16.266

TASKS = [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5  # 4 tasks x 5 trials, dataset order task-major


def sampler(**kwargs):
    return CurriculumSampler(TASKS, temperature=kwargs.pop("temperature", 0.25), ema=kwargs.pop("ema", 0.0),
                             seed=kwargs.pop("seed", 3), **kwargs)


def test_probabilities_are_the_formula():
    s = np.array([0.0, 0.3, 0.5, 0.9])
    tau = 0.25
    expected = np.exp((0.5 - s) / tau) / np.exp((0.5 - s) / tau).sum()
    np.testing.assert_allclose(curriculum_probabilities(s, tau), expected, rtol=1e-12)
    # no overflow for a tiny temperature: the hardest task takes (almost) everything
    assert curriculum_probabilities(s, 1e-4)[0] == pytest.approx(1.0)


def test_informative_probabilities_are_the_formula_and_skip_the_solved_and_the_never_solved():
    s = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    n, tau = 8, 0.25
    informative = 1 - s ** n - (1 - s) ** n  # P(a group of n episodes has a success and a failure)
    expected = np.exp(informative / tau) / np.exp(informative / tau).sum()
    probs = curriculum_probabilities(s, tau, "informative", n)
    np.testing.assert_allclose(probs, expected, rtol=1e-12)
    assert probs[2] == probs.max() and probs[0] == probs[4] == probs.min()
    # the hardest weighting draws the never-solved task most, the informative one least
    assert curriculum_probabilities(s, tau, "hardest", n).argmax() == 0
    # with one episode per prompt no group can have both outcomes: uniform
    np.testing.assert_allclose(curriculum_probabilities(s, tau, "informative", 1), 0.2)


def test_untried_tasks_start_neutral_and_draw_uniformly():
    s = sampler()
    np.testing.assert_array_equal(s.success, NEUTRAL_SUCCESS)
    np.testing.assert_allclose(s.probabilities(), 0.25)


@pytest.mark.parametrize("weighting", ["hardest", "informative"])
def test_drawn_task_frequencies_match_the_formula_chi_square(weighting):
    s = sampler(temperature=0.25 if weighting == "hardest" else 0.1, weighting=weighting, n_samples=8)
    s.observe([0, 1, 2, 3], [0.0, 0.3, 0.5, 0.9])  # ema=0: the estimates are these rates
    np.testing.assert_allclose(s.success, [0.0, 0.3, 0.5, 0.9])
    n = 20_000
    drawn = np.asarray(TASKS)[s.take(n)]
    observed = np.bincount(drawn, minlength=4)
    expected = curriculum_probabilities(s.success, s.temperature, weighting, 8) * n
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < CHI2_3DOF_999, (observed, expected)
    # and the test has power: the same counts are far from uniform draws
    uniform = np.full(4, n / 4)
    assert ((observed - uniform) ** 2 / uniform).sum() > 100 * CHI2_3DOF_999


def test_ema_update_per_task():
    s = sampler(ema=0.75)
    s.observe([1, 1, 1, 1, 2], [1, 1, 0, 0, 1])  # task 1: 0.5, task 2: 1.0, tasks 0 and 3 unseen
    np.testing.assert_allclose(s.success, [0.5, 0.75 * 0.5 + 0.25 * 0.5, 0.75 * 0.5 + 0.25 * 1.0, 0.5])
    s.observe([2], [0])
    assert s.success[2] == pytest.approx(0.75 * (0.75 * 0.5 + 0.25) + 0.0)
    assert s.episodes_seen.tolist() == [0, 4, 2, 0]
    m = s.metrics()
    assert m["curriculum/success_estimate/task_2"] == pytest.approx(s.success[2])
    assert sum(m[f"curriculum/probability/task_{t}"] for t in range(4)) == pytest.approx(1.0)


def test_trials_cycle_within_a_task():
    s = sampler(temperature=1e-3)
    s.observe([0, 1, 2, 3], [0.0, 1.0, 1.0, 1.0])  # only task 0 is ever drawn
    first = s.take(5)
    assert sorted(first) == [0, 1, 2, 3, 4]  # every trial of task 0 once per pass
    second = s.take(5)
    assert sorted(second) == [0, 1, 2, 3, 4]
    assert first != second  # a fresh shuffle each pass
    assert s.epoch == 0 and (s.take(10), s.epoch)[1] == 1  # 20 prompts drawn = one dataset's worth


def test_state_round_trips_through_json_and_resumes_exactly():
    a = sampler(ema=0.5)
    a.take(7)
    a.observe([0, 3, 3], [1, 0, 1])
    state = json.loads(json.dumps(a.state_dict()))  # the trainer stores it in trainer_state.json
    b = sampler(ema=0.5, seed=99)
    b.load_state_dict(state)
    assert b.take(50) == a.take(50)
    np.testing.assert_array_equal(b.success, a.success)


def test_state_from_another_sampler_or_dataset_is_refused():
    s = sampler()
    with pytest.raises(ValueError, match="data.curriculum.enable"):
        s.load_state_dict({"epoch": 0, "position": 3, "seed": 1, "data_len": 20, "shuffle": True})
    other = CurriculumSampler([0, 0, 1], temperature=1.0, ema=0.5)
    with pytest.raises(ValueError, match="3 prompts"):
        s.load_state_dict(other.state_dict())


@pytest.mark.parametrize("kwargs, key", [({"temperature": 0.0}, "data.curriculum.temperature"),
                                         ({"ema": 1.0}, "data.curriculum.ema"),
                                         ({"weighting": "easiest"}, "data.curriculum.weighting"),
                                         ({"n_samples": 0}, "data.n_samples")])
def test_bad_settings_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        CurriculumSampler(TASKS, **{"temperature": 0.5, "ema": 0.5, **kwargs})
