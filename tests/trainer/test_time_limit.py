"""TimeLimit's prediction: whether one more step and the final validation and save fit.
(The trainer's use of it, stopping with a validation and a checkpoint, is tested in
tests/trainer/test_checkpointing.py.)"""

import pytest

from verl.trainer.time_limit import EVALUATE, SAVE, STEP, VALIDATE, TimeLimit


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def run_phase(limit, clock, phase, seconds):
    with limit.measure(phase):
        clock.now += seconds


def test_no_limit_never_stops():
    clock = Clock()
    limit = TimeLimit(None, clock)
    run_phase(limit, clock, STEP, 1e9)
    assert limit.next_step_fits([VALIDATE, SAVE])


def test_nothing_to_predict_from_before_the_first_step():
    clock = Clock()
    limit = TimeLimit(10.0, clock)
    clock.now += 50  # already past the deadline, but no step has been timed
    assert limit.next_step_fits()


def test_the_longest_step_validation_and_save_must_fit():
    clock = Clock()
    limit = TimeLimit(1000.0, clock)
    run_phase(limit, clock, VALIDATE, 40)
    run_phase(limit, clock, STEP, 200)
    run_phase(limit, clock, STEP, 100)   # a faster step does not lower the prediction
    run_phase(limit, clock, SAVE, 10)
    assert limit.longest == {VALIDATE: 40, STEP: 200, SAVE: 10}
    assert limit.elapsed() == 350
    # 350 elapsed + 200 + 40 + 10 = 600 <= 1000; with this step's validation and save due: 650
    assert limit.next_step_fits() and limit.next_step_fits([VALIDATE, SAVE])
    clock.now += 350  # 700 elapsed: + 250 = 950, + this step's save 960, + its validation too 1000 (fits exactly)
    assert limit.next_step_fits([SAVE]) and limit.next_step_fits([VALIDATE, SAVE])
    clock.now += 50   # 750 elapsed: 1000 fits exactly, with this step's save 1010 does not
    assert limit.next_step_fits()
    assert not limit.next_step_fits([SAVE])

def test_a_phase_not_measured_yet_is_assumed_as_long_as_a_step():
    clock = Clock()
    limit = TimeLimit(650.0, clock)
    run_phase(limit, clock, STEP, 150)
    assert limit.next_step_fits()          # 150 + 150 (step) + 150 (validation) + 150 (save) = 600
    clock.now += 60
    assert not limit.next_step_fits()      # 660


def test_the_phases_that_end_a_run_are_the_callers():
    """SFT ends with a validation loss, a closed-loop evaluation and a save; a run that never
    validates ends with a save only."""
    clock = Clock()
    limit = TimeLimit(1000.0, clock)
    run_phase(limit, clock, STEP, 100)
    run_phase(limit, clock, EVALUATE, 500)
    run_phase(limit, clock, VALIDATE, 5)
    run_phase(limit, clock, SAVE, 5)       # 610 elapsed
    assert limit.next_step_fits(at_end=[SAVE])  # 715
    assert limit.next_step_fits(at_end=[VALIDATE, SAVE])  # 720
    assert not limit.next_step_fits(at_end=[VALIDATE, EVALUATE, SAVE])  # 1220


def test_a_failed_phase_is_not_measured():
    clock = Clock()
    limit = TimeLimit(500.0, clock)
    with pytest.raises(RuntimeError):
        with limit.measure(STEP):
            clock.now += 400
            raise RuntimeError("worker lost")
    assert STEP not in limit.longest
