"""Checkpoint round trip in the released format, and one clear error per missing / corrupt file."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from model_test_utils import INSTRUCTIONS, random_images
from verl.models.openvla_oft import (
    OpenVLAConfig,
    OpenVLAProcessor,
    get_action_norm_stats,
    load_dataset_statistics,
    load_openvla_checkpoint,
    read_checkpoint_weights,
    save_openvla_checkpoint,
)
from verl.models.openvla_oft.tiny import build_tiny_model, make_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _copy_dir(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_tiny_checkpoint_has_the_real_layout(tiny_checkpoint_dir):
    names = {p.name for p in tiny_checkpoint_dir.iterdir()}
    assert {"config.json", "model.safetensors.index.json", "dataset_statistics.json", "preprocessor_config.json",
            "tokenizer.json", "tokenizer_config.json"} <= names
    config = json.loads((tiny_checkpoint_dir / "config.json").read_text())
    assert config["model_type"] == "openvla" and config["n_action_bins"] == 256
    assert config["timm_model_ids"][0].startswith("vit_large_patch14_reg4_dinov2")
    stored = read_checkpoint_weights(tiny_checkpoint_dir)
    assert "vision_backbone.featurizer.blocks.0.ls1.scale_factor" in stored
    assert not any(k.endswith(".gamma") for k in stored)
    assert stored["language_model.model.embed_tokens.weight"].shape[0] == 32064
    stats = load_dataset_statistics(tiny_checkpoint_dir)
    for suite in ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90"):
        assert get_action_norm_stats(stats, suite)["mask"] == [True] * 6 + [False]
    reach = get_action_norm_stats(stats, "reach")
    assert reach["q01"] == reach["min"] == [-1.0] * 7 and reach["q99"] == reach["max"] == [1.0] * 7


def test_round_trip_same_tensors_keys_and_outputs(tiny_checkpoint_dir, tmp_path, processor):
    model = load_openvla_checkpoint(tiny_checkpoint_dir).eval()
    reference = build_tiny_model(seed=0).eval()
    assert model.state_dict().keys() == reference.state_dict().keys()
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())

    out = tmp_path / "resaved"
    save_openvla_checkpoint(model, out, processor=OpenVLAProcessor.from_pretrained(tiny_checkpoint_dir),
                            max_shard_size="2MB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((out / s).is_file() for s in shards)
    assert read_checkpoint_weights(out).keys() == read_checkpoint_weights(tiny_checkpoint_dir).keys()
    again = load_openvla_checkpoint(out).eval()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in again.state_dict().items())
    assert json.loads((out / "dataset_statistics.json").read_text()) == load_dataset_statistics(tiny_checkpoint_dir)

    ids, mask = processor.tokenize_prompts(INSTRUCTIONS)
    pixels = processor.preprocess_images(random_images(3))
    with torch.no_grad():
        assert torch.equal(again(ids, mask, pixels), reference(ids, mask, pixels))


def test_unknown_config_keys_survive_and_overrides_apply(tiny_checkpoint_dir, tmp_path):
    ckpt = _copy_dir(tiny_checkpoint_dir, tmp_path / "ck")
    config = json.loads((ckpt / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_prismatic.OpenVLAConfig"}
    config["transformers_version"] = "4.40.1"
    (ckpt / "config.json").write_text(json.dumps(config))
    model = load_openvla_checkpoint(ckpt, action_chunk=25, action_dim=14)
    assert model.num_action_tokens == 350
    save_openvla_checkpoint(model, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["auto_map"] == config["auto_map"] and saved["transformers_version"] == "4.40.1"
    assert OpenVLAConfig.from_pretrained(tmp_path / "out").action_chunk == 25


def test_missing_and_corrupt_files_give_one_clear_error(tiny_checkpoint_dir, tmp_path):
    shard = "model-00001-of-00001.safetensors"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_openvla_checkpoint(tmp_path / "nowhere")

    no_config = _copy_dir(tiny_checkpoint_dir, tmp_path / "a")
    (no_config / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_openvla_checkpoint(no_config)

    bad_config = _copy_dir(tiny_checkpoint_dir, tmp_path / "b")
    (bad_config / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        load_openvla_checkpoint(bad_config)

    no_shard = _copy_dir(tiny_checkpoint_dir, tmp_path / "c")
    (no_shard / shard).unlink()
    with pytest.raises(FileNotFoundError, match=shard):
        load_openvla_checkpoint(no_shard)

    truncated = _copy_dir(tiny_checkpoint_dir, tmp_path / "d")
    data = (truncated / shard).read_bytes()
    (truncated / shard).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{shard} is not a readable safetensors file"):
        load_openvla_checkpoint(truncated)

    bad_index = _copy_dir(tiny_checkpoint_dir, tmp_path / "e")
    (bad_index / "model.safetensors.index.json").write_text("[]")
    with pytest.raises(ValueError, match="model.safetensors.index.json is not a valid safetensors index"):
        load_openvla_checkpoint(bad_index)

    missing_key = _copy_dir(tiny_checkpoint_dir, tmp_path / "f")
    tensors = load_file(str(missing_key / shard))
    del tensors["projector.fc3.bias"]
    save_file(tensors, str(missing_key / shard))
    with pytest.raises(ValueError, match="projector.fc3.bias"):
        load_openvla_checkpoint(missing_key)


def test_save_refuses_to_overwrite_a_model(tiny_checkpoint_dir, tmp_path):
    model = build_tiny_model(seed=1)
    target = _copy_dir(tiny_checkpoint_dir, tmp_path / "existing")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_openvla_checkpoint(model, target)
    save_openvla_checkpoint(model, target, overwrite=True)
    assert torch.equal(
        load_openvla_checkpoint(target).state_dict()["projector.fc1.weight"], model.state_dict()["projector.fc1.weight"]
    )


def test_oft_proprio_projector_file_is_loaded(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / "proprio", use_proprio=True, seed=2)
    shard = ckpt / "model-00001-of-00001.safetensors"
    tensors = load_file(str(shard))
    proprio = {k.removeprefix("proprio_projector."): tensors.pop(k) for k in list(tensors) if k.startswith("proprio_projector.")}
    assert set(proprio) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    save_file(tensors, str(shard))
    index_path = ckpt / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if not k.startswith("proprio_projector.")}
    index_path.write_text(json.dumps(index))
    torch.save({"module." + k: v for k, v in proprio.items()}, ckpt / "proprio_projector--150000_checkpoint.pt")
    model = load_openvla_checkpoint(ckpt)
    assert torch.equal(model.proprio_projector.fc2.weight, proprio["fc2.weight"])


def test_make_tiny_checkpoint_script(tmp_path):
    out = tmp_path / "script"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_tiny_checkpoint.py"), "--out", str(out), "--openvla", "--seed", "3",
         "--llm-layers", "3", "--vision-depth", "3"],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    model = load_openvla_checkpoint(out)
    assert not model.config.parallel_decoding and model.num_action_tokens == 7
    assert model.config.text_config["num_hidden_layers"] == 3
    assert all(o["depth"] == 3 for o in model.config.timm_model_overrides)


def test_larger_tiny_checkpoint_keeps_the_architecture(tmp_path):
    """The size knobs (used by the rollout overlap benchmark) change widths and depths only."""
    small = build_tiny_model(0)
    out = make_tiny_checkpoint(tmp_path / "larger", llm_hidden=256, llm_layers=3, vision_width=128, vision_depth=3)
    model = load_openvla_checkpoint(out)
    text = model.config.text_config
    assert (text["hidden_size"], text["num_hidden_layers"], text["intermediate_size"]) == (256, 3, 688)
    assert all(o["embed_dim"] == 128 and o["depth"] == 3 for o in model.config.timm_model_overrides)

    def layout(m):  # parameter names with layer indices folded: the same module tree
        return {".".join("N" if p.isdigit() else p for p in name.split(".")) for name, _ in m.named_parameters()}

    assert layout(model) == layout(small)
    assert sum(p.numel() for p in model.parameters()) > 3 * sum(p.numel() for p in small.parameters())


def test_patch_size_knob_quarters_the_image_tokens(tmp_path):
    """--patch-size 28 (the CPU cold start's): the same module tree and 224 px input, 64 image tokens per
    tower instead of 256, saved in the config so the loader rebuilds it; a size that does not divide 224 is refused."""
    out = make_tiny_checkpoint(tmp_path / "p28", llm_hidden=64, patch_size=28)
    model = load_openvla_checkpoint(out)
    assert all(o["patch_size"] == 28 for o in model.config.timm_model_overrides)
    assert model.vision_backbone.featurizer.patch_embed.proj.weight.shape[-2:] == (28, 28)
    pixels = torch.zeros(2, 6, 224, 224)
    assert model.vision_backbone(pixels).shape[1] == 64
    assert build_tiny_model(0).vision_backbone(pixels).shape[1] == 256

    def layout(m):
        return {name for name, _ in m.named_parameters()}

    assert layout(model) == layout(build_tiny_model(0))
    with pytest.raises(ValueError, match="patch_size=30"):
        build_tiny_model(0, patch_size=30)
