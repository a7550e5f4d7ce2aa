"""Task-balanced batches: every batch holds each task's share, trials cycle within a task, the
state resumes exactly, and the trainer's config picks the sampler."""

import json

import numpy as np
import pytest
from verl.utils.dataset.sampler import StatefulSampler
from verl.utils.dataset.task_balanced import TaskBalancedSampler

TASKS = [0] * 30 + [1] * 30  # the cold-start experiment's shape: 2 tasks x 30 training init states


def test_every_batch_of_four_holds_two_prompts_per_task():
    s = TaskBalancedSampler(TASKS, seed=1)
    for _ in range(40):
        assert sorted(np.asarray(TASKS)[s.take(4)].tolist()) == [0, 0, 1, 1]


def test_uniform_shuffling_does_put_a_whole_batch_on_one_task():
    """What the balanced sampler is for: the reference's shuffled epochs, same seed and shapes,
    give batches of a single task (so this comparison can fail for the balanced sampler)."""
    s = StatefulSampler(len(TASKS), shuffle=True, seed=1)
    single_task = sum(len(set(np.asarray(TASKS)[s.take(4)].tolist())) == 1 for _ in range(200))
    assert single_task >= 3  # about 11 expected: 2 * C(30,4) / C(60,4) = 5.6% of batches


def test_odd_batches_continue_the_cycle_where_the_last_stopped():
    s = TaskBalancedSampler([0] * 4 + [1] * 4 + [2] * 4, seed=0)
    tasks = [np.asarray([0] * 4 + [1] * 4 + [2] * 4)[s.take(2)].tolist() for _ in range(3)]
    assert tasks == [[0, 1], [2, 0], [1, 2]]


def test_each_pass_uses_every_trial_of_a_task_once_in_a_fresh_order():
    s = TaskBalancedSampler(TASKS, seed=5)
    first = s.take(60)
    second = s.take(60)
    assert sorted(first) == list(range(60)) and sorted(second) == list(range(60))
    assert first != second
    assert s.epoch == 2


def test_state_round_trips_through_json_and_resumes_exactly():
    a = TaskBalancedSampler(TASKS, seed=2)
    a.take(7)
    state = json.loads(json.dumps(a.state_dict()))
    b = TaskBalancedSampler(TASKS, seed=99)
    b.load_state_dict(state)
    assert b.take(50) == a.take(50)


def test_state_from_another_sampler_or_dataset_is_refused():
    s = TaskBalancedSampler(TASKS)
    with pytest.raises(ValueError, match="data.task_balanced"):
        s.load_state_dict(StatefulSampler(60).state_dict())
    with pytest.raises(ValueError, match="3 prompts"):
        s.load_state_dict(TaskBalancedSampler([0, 0, 1]).state_dict())
