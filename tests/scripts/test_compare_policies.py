"""scripts/compare_policies.py: the comparison figures on logits whose answer is known, and the
script end to end on tiny checkpoints and a demo file in LIBERO's layout."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("h5py")

from verl.models.openvla_oft.tiny import make_tiny_checkpoint
from verl.utils.dataset.libero_hdf5 import LiberoDemoRecord, write_libero_hdf5

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("compare_policies", ROOT / "scripts" / "compare_policies.py")
cp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cp)


def _peaked_logits(bins: torch.Tensor, margin: float = 3.0) -> torch.Tensor:
    """[N, A, 256] logits with a clear argmax at `bins` [N, A]."""
    logits = torch.randn(*bins.shape, 256) * 0.1
    logits.scatter_(-1, bins[..., None], margin)
    return logits


def test_compare_counts_exactly_the_changed_argmaxes():
    torch.manual_seed(0)
    bins = torch.randint(10, 240, (20, 14))
    base = _peaked_logits(bins)
    same = cp.compare(base, base.clone(), temperature=0.5)
    assert same["argmax_changed"] == 0.0 and same["kl_t1"] == pytest.approx(0.0, abs=1e-6)

    moved = bins.clone()
    moved[:5] += 2  # 5 of 20 frames: every token moved by two bins
    other = _peaked_logits(moved)
    result = cp.compare(base, other, temperature=0.5)
    assert result["argmax_changed"] == pytest.approx(0.25)
    assert result["bin_shift_median"] == 2 and result["bin_shift_at_most_2"] == 1.0
    assert result["kl_t1"] > 0 and result["kl_at_t"] > result["kl_t1"]  # sharper softmax, larger divergence
    assert [q["quartile"] for q in result["argmax_changed_by_base_margin"]] == [1, 2, 3, 4]


def test_argmax_changes_are_attributed_to_nearly_tied_tokens():
    """Tokens whose base top-2 gap is tiny flip under a small logit change; peaked ones do not."""
    torch.manual_seed(1)
    n, a = 40, 8
    base = torch.zeros(n, a, 256)
    base[..., 100] = torch.linspace(0.01, 4.0, n * a).reshape(n, a)  # gap to the runner-up (bin 101 at 0)
    other = base.clone()
    other[..., 101] += 0.5  # raises the runner-up by 0.5: flips exactly the tokens with gap < 0.5
    result = cp.compare(base, other, temperature=1.0)
    quartiles = [q["argmax_changed"] for q in result["argmax_changed_by_base_margin"]]
    assert quartiles[0] > 0.3 and quartiles[1:] == [0.0, 0.0, 0.0]
    assert result["bin_shift_median"] == 1


def test_policy_figures_score_the_demonstrator():
    bins = torch.randint(0, 256, (6, 7))
    figures = cp.policy_figures(_peaked_logits(bins, margin=20.0), bins, temperature=1.0)
    assert figures["demo_exact"] == 1.0 and figures["demo_near"] == 1.0
    assert figures["demo_nll_t1"] < 0.01 and figures["entropy_at_t"] < 0.1


def _demo_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    demos = [LiberoDemoRecord(actions=np.concatenate([rng.uniform(-0.5, 0.5, (t, 6)), np.sign(rng.uniform(-1, 1, (t, 1)))], 1),
                              states=rng.normal(size=(t, 45)), ee_states=rng.normal(size=(t, 6)),
                              gripper_states=rng.normal(size=(t, 2)), joint_states=rng.normal(size=(t, 7)),
                              robot_states=rng.normal(size=(t, 9)),
                              images={"agentview": rng.integers(0, 256, (t, 32, 32, 3), dtype=np.uint8)}, init_state_id=i)
             for i, t in enumerate((6, 5))]
    return Path(write_libero_hdf5(
        str(tmp_path / "demos"), demos,
        problem_info={"problem_name": "p", "domain_name": "robosuite", "language_instruction": "pick up the soup"},
        bddl_file_name="/x/libero_object/pick_up_the_soup.bddl", env_name="Libero_Floor_Manipulation",
        env_args={"type": 1}, task_suite_name="libero_object", task_id=0))


def test_script_end_to_end_on_tiny_checkpoints(tmp_path, capsys):
    base = make_tiny_checkpoint(tmp_path / "base", seed=0)
    copy = make_tiny_checkpoint(tmp_path / "copy", seed=0)
    other = make_tiny_checkpoint(tmp_path / "other", seed=1)
    demos = _demo_file(tmp_path)
    out = tmp_path / "compare.json"
    assert cp.main([str(base), str(copy), str(other), "--demos", str(demos), "--unnorm-key", "libero_object_no_noops",
                    "--frames", "8", "--batch-size", "3", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["frames"] == 8 and result["tokens_per_frame"] == 56
    same, different = result["others"]
    assert same["argmax_changed"] == 0.0 and same["kl_t1"] == pytest.approx(0.0, abs=1e-6)
    assert different["argmax_changed"] > 0.5 and different["kl_t1"] > 0.01  # another random model
    for figures in (result["base_policy"], different["policy"]):
        assert 0.0 <= figures["demo_exact"] <= figures["demo_near"] <= 1.0
    assert "argmax changed" in capsys.readouterr().out


def test_script_names_a_missing_statistics_key(tmp_path):
    base = make_tiny_checkpoint(tmp_path / "base", seed=0)
    with pytest.raises(SystemExit, match="--unnorm-key 'nope' not in"):
        cp.main([str(base), str(base), "--demos", str(_demo_file(tmp_path)), "--unnorm-key", "nope"])
