"""scripts/cost_model.py arithmetic on hand-worked numbers."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("cost_model", ROOT / "scripts" / "cost_model.py")
cm = importlib.util.module_from_spec(spec)
sys.modules["cost_model"] = cm
spec.loader.exec_module(cm)


def test_env_step_costs_split_physics_and_render():
    # 2 cores; render once per 8 steps -> 40 steps/s (0.05 core-s/step); every step -> 10/s (0.2 core-s/step)
    # render = (0.2 - 0.05) / (7/8) = 0.171428..., physics = 0.05 - render/8 = 0.028571...
    costs = cm.env_step_costs(40.0, 10.0, cores=2, chunk=8)
    assert costs["render_s"] == pytest.approx(0.15 * 8 / 7)
    assert costs["physics_s"] == pytest.approx(0.05 - 0.15 / 7)
    assert cm.env_steps_per_s(10, costs["physics_s"], costs["render_s"], 1.0) == pytest.approx(10 / 0.2)
    with pytest.raises(ValueError):
        cm.env_step_costs(10.0, 40.0, cores=2, chunk=8)


def test_forward_flops_by_hand():
    shape = cm.ForwardShape(vision_params_used=[10, 20], vision_tokens=[5, 4], vision_widths=[2, 3],
                            vision_blocks_used=[1, 2], projector_params=7, decoder_params=100, decoder_layers=2,
                            hidden=4, lm_head_action_params=3, num_images=1, sequence_tokens=6, action_tokens=2)
    f = cm.forward_flops(shape)
    # vision: 2*10*5 + 4*25*2*1 = 300; 2*20*4 + 4*16*3*2 = 544
    assert f["vision"] == 300 + 544
    assert f["projector"] == 2 * 7 * 256
    assert f["decoder"] == 2 * 100 * 6 + 4 * 36 * 4 * 2  # 1200 + 1152
    assert f["lm_head"] == 2 * 3 * 2
    assert f["total"] == 844 + 3584 + 2352 + 12


def test_step_time_by_hand():
    costs = {"physics_s": 0.02, "render_s": 0.08}
    s = cm.StepSettings(gpus=2, gpu="A800", cpus_per_node=12, trajectories=10, mean_episode_steps=80, chunk=8,
                        rollout_mfu=0.5, train_mfu=0.25)
    flops = 312e12  # one forward = 1 s of one A800 at 100%
    t = cm.step_time(flops, costs, s, renders_per_step=1.0, forwards_per_trajectory=10, overlap=False)
    # env: 10 cores / (0.02 + 0.08) = 100 steps/s; 800 steps -> 8 s
    assert t["env_steps_per_s_node"] == pytest.approx(100.0)
    assert t["env_s"] == pytest.approx(8.0)
    # 100 forwards on 2 GPUs at 50%: 100 s; log-prob at 25%: 200 s; update 3x: 600 s
    assert t["rollout_model_s"] == pytest.approx(100.0)
    assert t["rollout_s"] == pytest.approx(108.0)
    assert t["log_prob_s"] == pytest.approx(200.0) and t["update_s"] == pytest.approx(600.0)
    assert t["step_s"] == pytest.approx(908.0)
    overlapped = cm.step_time(flops, costs, s, renders_per_step=1.0, forwards_per_trajectory=10, overlap=True)
    assert overlapped["rollout_s"] == pytest.approx(100.0)


def test_bad_flags_name_the_flag(capsys):
    with pytest.raises(SystemExit):
        cm.main(["--cpus-per-node", "8", "--gpus", "8"])
    assert "--cpus-per-node: expected more cores than --gpus" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cm.main(["--train-mfu", "1.5"])
    assert "--train-mfu: expected a fraction in (0, 1]" in capsys.readouterr().err
