"""main_ppo end to end on the built-in reach task (2 CPU workers): exact resume after a kill,
val_only, and never overwriting a run's checkpoints."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from e2e_utils import ROOT, deterministic, reach_overrides, read_metrics, run_main, run_until
from verl.models.openvla_oft.tiny import make_tiny_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("reach_e2e") / "tiny", seed=0)


def weights(step_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(next(step_dir.glob("model-*.safetensors"))))


def resume_settings(dtype: str) -> tuple[str, ...]:
    # LR warm-up over the 3 steps: a resumed run whose LR schedule restarted at step 0 logs (and
    # trains with) another actor/lr at step 3
    return ("trainer.total_training_steps=3", "trainer.save_freq=2", "trainer.test_freq=3",
            "trainer.val_before_train=False", "data.filter_accuracy=True",
            "actor_rollout_ref.actor.optim.lr_warmup_steps=3", f"actor_rollout_ref.model.dtype={dtype}")


@pytest.fixture(scope="module")
def straight_run(ckpt, tmp_path_factory):
    """dtype -> the run directory of 3 uninterrupted steps with resume_settings(dtype), run once per
    module: the exact-resume test's reference and the offload test's plain run."""
    runs: dict[str, Path] = {}

    def get(dtype: str) -> Path:
        if dtype not in runs:
            run_dir = tmp_path_factory.mktemp(f"straight_{dtype}")
            run_main(reach_overrides(ckpt, run_dir, *resume_settings(dtype)))
            runs[dtype] = run_dir
        return runs[dtype]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_exact_resume_after_kill(ckpt, straight_run, tmp_path, dtype):
    """3 steps straight == 2 steps, SIGKILL, resume: same step-3 metrics and weights, in fp32 and
    in bf16 (the GPU's mixed-precision policy on CPU: the fp32 master weights and AdamW state are
    what is saved, so the resumed bf16 run is exact too)."""
    common = resume_settings(dtype)
    straight_dir, killed_dir = straight_run(dtype), tmp_path / "killed"

    latest = killed_dir / "actor" / "latest_checkpointed_iteration.txt"
    run_until(reach_overrides(ckpt, killed_dir, *common),
              done=lambda: latest.is_file() and latest.read_text().strip() == "2")
    assert not (killed_dir / "actor" / "global_step_3").exists()
    run_main(reach_overrides(ckpt, killed_dir, *common, "trainer.resume_mode=auto"))

    assert_same_step_3(straight_dir, killed_dir, ckpt)


def assert_same_step_3(straight_dir: Path, resumed_dir: Path, ckpt: Path) -> None:
    """The resumed run's step 3 is the straight run's: metrics (but timings) and weights."""
    straight, resumed = read_metrics(straight_dir), read_metrics(resumed_dir)
    a, b = deterministic(straight[3]), deterministic(resumed[3])
    assert "actor/pg_loss" in a and "val/test_score/all" in a
    assert a["actor/lr"] == pytest.approx(1e-3)  # the last warm-up step (1/3, 2/3, 3/3 of optim.lr)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), key
    wa = weights(straight_dir / "actor" / "global_step_3")
    wb = weights(resumed_dir / "actor" / "global_step_3")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    # and the run really changed the weights
    w0 = load_file(str(next(Path(ckpt).glob("model-*.safetensors"))))
    assert any(not torch.equal(wa[k], w0[k]) for k in wa)


@pytest.mark.slow
def test_a_time_limited_run_stops_validated_and_saved_and_resumes_exactly(ckpt, straight_run, tmp_path):
    """trainer.time_limit_s=1 has passed by the end of step 1 (Ray and the model take longer than
    that to start): the run validates and saves step 1, says so, exits 0; run again without a limit
    it continues to step 3, equal to the uninterrupted run."""
    common = resume_settings("float32")
    run_dir = tmp_path / "limited"
    proc = run_main(reach_overrides(ckpt, run_dir, *common, "trainer.time_limit_s=1"))
    metrics = read_metrics(run_dir)
    assert sorted(metrics) == [1] and metrics[1]["trainer/stopped_by_time_limit"] == 1.0
    assert "val/test_score/all" in metrics[1]  # validated although test_freq=3
    assert (run_dir / "actor" / "latest_checkpointed_iteration.txt").read_text().strip() == "1"
    assert "trainer.time_limit_s=1: stopped after step 1 of 3" in proc.stdout + proc.stderr
    run_main(reach_overrides(ckpt, run_dir, *common))
    assert "trainer/stopped_by_time_limit" not in read_metrics(run_dir)[3]
    assert_same_step_3(straight_run("float32"), run_dir, ckpt)


@pytest.fixture(scope="module")
def val_only_run(ckpt, tmp_path_factory):
    """A val_only run of the tiny checkpoint (videos on): its run directory and logged metrics."""
    run_dir = tmp_path_factory.mktemp("val_only")
    run_main(reach_overrides(ckpt, run_dir, "trainer.val_only=True", "trainer.val_before_train=False",
                             "actor_rollout_ref.rollout.save_video=True"))
    return run_dir, read_metrics(run_dir)


@pytest.mark.slow
def test_val_only_validates_even_without_val_before_train(val_only_run, ckpt):
    run_dir, metrics = val_only_run
    assert list(metrics) == [0]
    assert metrics[0]["val/test_score/reach"] == metrics[0]["val/test_score/all"]  # the only suite
    assert not (run_dir / "actor").exists()  # nothing trained, nothing saved
    report = json.loads((run_dir / "validation" / "step_0" / "report.json").read_text())
    assert report["weights"] == str(ckpt) and report["success_rate"] == metrics[0]["val/test_score/all"]
    episodes = [json.loads(line) for line in (run_dir / "validation" / "step_0" / "episodes.jsonl").read_text().splitlines()]
    assert len(episodes) == 16 and sum(e["success"] for e in episodes) == round(metrics[0]["val/test_score/all"] * 16)
    # rollout.max_videos_per_task=1: the first trial of each of the 4 tasks, each named in episodes.jsonl
    videos = sorted(str(v) for v in (run_dir / "videos").rglob("*.mp4"))
    assert len(videos) == 4 and videos == sorted(e["video"] for e in episodes if e["video"])


@pytest.mark.slow
def test_evaluate_checkpoint_script(ckpt, tmp_path, val_only_run):
    """The script's greedy score is the val_only run's for the same checkpoint and episodes."""
    out = tmp_path / "eval.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "evaluate_checkpoint.py"), str(ckpt), "--suite", "reach",
         "--out", str(out), "trainer.device=cpu", "trainer.n_gpus_per_node=2", "trainer.ray_num_cpus=3",
         "data.num_trials_per_task=4", "data.val_batch_size=8", "data.train_batch_size=2",
         "env.num_workers=1", "env.envs_per_worker=4"],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = json.loads(out.read_text())
    assert scores["checkpoint"] == str(ckpt)
    assert scores["val/test_score/reach"] == val_only_run[1][0]["val/test_score/reach"]


def test_resume_disable_refuses_to_overwrite_checkpoints(ckpt, tmp_path):
    (tmp_path / "actor" / "global_step_5").mkdir(parents=True)
    proc_error = None
    try:
        run_main(reach_overrides(ckpt, tmp_path, "trainer.resume_mode=disable", "trainer.total_training_steps=1"))
    except AssertionError as err:
        proc_error = str(err)
    assert proc_error is not None and "trainer.resume_mode=disable" in proc_error and "overwrite" in proc_error
    assert "Traceback" not in proc_error and "Started a local Ray" not in proc_error


@pytest.mark.slow
def test_offload_checkpointing_and_reused_log_probs_leave_the_run_unchanged(ckpt, straight_run, tmp_path):
    """param_offload (FSDP2's CPUOffloadPolicy: sharded parameters, their gradients and the AdamW
    step on the host, copied to the compute device per unit), gradient checkpointing (activations
    recomputed in the backward pass) and actor.use_rollout_log_probs (pi_old and the entropy taken from
    the rollout's forward, not recomputed) change where tensors live and what is computed twice, never
    the result: 3 steps with all on give the same metrics and weights as the exact-resume test's 3
    uninterrupted fp32 steps with all off. optimizer_offload is on in both runs (the default): on a
    CPU run it has nothing to move (the host is the device); its GPU path is exercised by
    scripts/gpu_smoke.sh."""
    plain_dir, flagged_dir = straight_run("float32"), tmp_path / "flagged"
    run_main(reach_overrides(ckpt, flagged_dir, *resume_settings("float32"),
                             "actor_rollout_ref.actor.fsdp_config.param_offload=True",
                             "actor_rollout_ref.model.enable_gradient_checkpointing=True",
                             "actor_rollout_ref.actor.use_rollout_log_probs=True", "trainer.entropy_after_update=False"))
    plain, flagged = read_metrics(plain_dir), read_metrics(flagged_dir)
    assert sorted(plain) == sorted(flagged) == [1, 2, 3]
    # what the flagged run does not compute: the recompute's check against the rollout, the entropy after the update
    skipped = {"rollout/old_vs_rollout_logprob_abs_diff", "rollout/old_vs_rollout_logprob_abs_diff_max",
               "actor_after/entropy_loss_eval"}
    for step in (1, 2, 3):
        a, b = deterministic(plain[step]), deterministic(flagged[step])
        assert plain[step]["rollout/old_vs_rollout_logprob_abs_diff_max"] < 1e-5  # the premise: they agree
        assert "timing/old_log_prob" in plain[step] and "timing/old_log_prob" not in flagged[step]
        assert "timing/entropy_after" in plain[step] and "timing/entropy_after" not in flagged[step]
        assert a.keys() - skipped == b.keys() and skipped <= a.keys()
        for key in b:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (step, key)
    assert "val/test_score/all" in flagged[3]
    wa = weights(plain_dir / "actor" / "global_step_3")
    wb = weights(flagged_dir / "actor" / "global_step_3")
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-5, atol=1e-6, msg=key)
