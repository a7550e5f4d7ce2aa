"""scripts/export_checkpoint.py: a checkpoint -> a release directory laid out like the published
OpenVLA(-OFT) checkpoints, which our loader reloads with the same outputs (within bf16 rounding), whose
auto_map resolves the upstream remote code, and whose LoRA adapter is a valid PEFT adapter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from verl.models.openvla_oft import OpenVLAProcessor, apply_lora, load_openvla_checkpoint
from verl.models.openvla_oft.checkpoint import read_checkpoint_weights
from verl.models.openvla_oft.tiny import build_tiny_tokenizer, make_tiny_checkpoint
from verl.utils.checkpoint_export import ExportError, export_release, push_to_hub, remote_code_auto_maps

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "models"))
from model_test_utils import INSTRUCTIONS, random_images  # noqa: E402

RELEASE_FILES = {
    "README.md", "config.json", "dataset_statistics.json", "generation_config.json", "model.safetensors.index.json",
    "preprocessor_config.json", "processor_config.json", "special_tokens_map.json", "tokenizer.json",
    "tokenizer_config.json",
}
# fields of the released openvla/openvla-7b config.json (tests/models/test_openvla_7b_meta.py)
RELEASED_CONFIG_FIELDS = {
    "arch_specifier", "architectures", "auto_map", "hf_llm_id", "image_resize_strategy", "image_sizes",
    "llm_backbone_id", "llm_max_length", "model_type", "n_action_bins", "norm_stats", "output_projector_states",
    "pad_to_multiple_of", "pad_token_id", "text_config", "timm_model_ids", "timm_override_act_layers",
    "torch_dtype", "use_fused_vision_backbone", "vision_backbone_id",
}


@pytest.fixture(scope="module")
def tiny_step(tmp_path_factory) -> Path:
    """A training step directory of a tiny OFT model with proprio (fp32, with resume state beside it)."""
    step = make_tiny_checkpoint(tmp_path_factory.mktemp("run") / "actor" / "global_step_7", seed=3, use_proprio=True)
    (step / "actor_state").mkdir()
    (step / "actor_state" / "rank_0.pt").write_bytes(b"optimizer state")
    (step / "trainer_state.json").write_text(json.dumps({"global_steps": 7}))
    return step


@pytest.fixture(scope="module")
def release(tiny_step, tmp_path_factory) -> Path:
    return export_release(tiny_step, tmp_path_factory.mktemp("release") / "out", unnorm_key="libero_10")


def _outputs(model, processor) -> torch.Tensor:
    input_ids, attention_mask = processor.tokenize_prompts(INSTRUCTIONS[:2])
    pixel_values = processor.preprocess_images(random_images(2, seed=5))
    with torch.no_grad():
        return model.eval()(input_ids, attention_mask, pixel_values, proprio=torch.linspace(-1, 1, 16).reshape(2, 8))


def test_release_reloads_with_the_same_outputs(tiny_step, release):
    source = load_openvla_checkpoint(tiny_step)
    exported = load_openvla_checkpoint(release)
    stored = read_checkpoint_weights(release)
    assert {v.dtype for v in stored.values()} == {torch.bfloat16}
    # exactly the source's weights rounded to bf16 ...
    rounded = {k: v.to(torch.bfloat16).float() for k, v in source.state_dict().items()}
    assert all(torch.equal(v, rounded[k]) for k, v in exported.state_dict().items())
    # ... so the outputs are the bf16-rounded model's, and close to the fp32 source's
    processor = OpenVLAProcessor.from_pretrained(release)
    source_out, exported_out = _outputs(source, processor), _outputs(exported, processor)
    source.load_state_dict(rounded)
    assert torch.equal(exported_out, _outputs(source, processor))
    assert torch.allclose(exported_out, source_out, atol=0.05), (exported_out - source_out).abs().max()


def test_release_file_set_and_config_match_the_published_layout(release):
    names = {p.name for p in release.iterdir()}
    shards = {n for n in names if n.startswith("model-") and n.endswith(".safetensors")}
    assert names - shards == RELEASE_FILES | {"proprio_projector--7_checkpoint.pt"}  # no actor_state/, trainer state
    config = json.loads((release / "config.json").read_text())
    assert RELEASED_CONFIG_FIELDS <= set(config)
    assert config["torch_dtype"] == "bfloat16" and config["model_type"] == "openvla"
    assert config["architectures"] == ["OpenVLAForActionPrediction"] and config["use_proprio"] is True
    maps = remote_code_auto_maps("openvla/openvla-7b")
    assert config["auto_map"] == maps["config.json"] == {
        "AutoConfig": "openvla/openvla-7b--configuration_prismatic.OpenVLAConfig",
        "AutoModelForVision2Seq": "openvla/openvla-7b--modeling_prismatic.OpenVLAForActionPrediction"}
    for name in ("preprocessor_config.json", "processor_config.json", "tokenizer_config.json"):
        data = json.loads((release / name).read_text())
        assert data["auto_map"] == maps[name] and data["processor_class"] == "PrismaticProcessor", name
    assert json.loads((release / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert "libero_10_no_noops" in json.loads((release / "dataset_statistics.json").read_text())
    proprio = torch.load(release / "proprio_projector--7_checkpoint.pt", weights_only=True)
    assert set(proprio) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert "`libero_10_no_noops`" in (release / "README.md").read_text()


STAND_IN_CONFIG = '''
from transformers import PretrainedConfig
class OpenVLAConfig(PretrainedConfig):  # stand-in for the upstream module: only its location matters
    model_type = "openvla"
'''
STAND_IN_PROCESSING = '''
from transformers.image_processing_utils import ImageProcessingMixin
from transformers.processing_utils import ProcessorMixin
class PrismaticImageProcessor(ImageProcessingMixin):
    pass
class PrismaticProcessor(ProcessorMixin):
    attributes = ["image_processor", "tokenizer"]
    image_processor_class = "AutoImageProcessor"
    tokenizer_class = "AutoTokenizer"
'''
RESOLVE = '''
import sys
from transformers import AutoConfig, AutoProcessor
config = AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True)
processor = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
print(type(config).__module__, config.action_chunk, type(processor).__name__, type(processor.image_processor).__name__,
      processor.tokenizer("hi")["input_ids"])
'''


def test_auto_map_resolves_the_remote_code_of_the_named_hub_repo(release, tmp_path):
    """transformers itself follows the auto_map to `openvla/openvla-7b` (served here from an offline hub
    cache holding stand-in modules, since this machine has no hub access)."""
    snapshot = tmp_path / "hub" / "models--openvla--openvla-7b" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    (snapshot / "configuration_prismatic.py").write_text(STAND_IN_CONFIG)
    (snapshot / "processing_prismatic.py").write_text(STAND_IN_PROCESSING)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"), HF_MODULES_CACHE=str(tmp_path / "mods"))
    out = subprocess.run([sys.executable, "-c", RESOLVE, str(release)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    module, chunk, processor, image_processor, ids = out.stdout.strip().splitlines()[-1].split(" ", 4)
    assert module.startswith("transformers_modules.openvla.") and module.endswith(".configuration_prismatic")
    assert (chunk, processor, image_processor) == ("8", "PrismaticProcessor", "PrismaticImageProcessor")
    assert ids.startswith("[1,")  # BOS from the exported tokenizer


@pytest.mark.parametrize("setup, kwargs, says", [
    ("head", {}, "action_head--150000_checkpoint.pt"),
    (None, {"unnorm_key": "bridge_orig"}, "--unnorm-key 'bridge_orig' is not in"),
    (None, {"action_chunk": 25}, "--action-chunk 25 disagrees with the checkpoint"),
    (None, {"action_dim": 14}, "--action-dim 14 disagrees with the checkpoint"),
    ("six_dim_stats", {"unnorm_key": "libero_10"}, "have 6 dims but"),
    ("lora_without_config", {}, "pass --lora-alpha and --base-model"),
])
def test_what_cannot_work_is_refused_before_any_weight_is_read(tmp_path, monkeypatch, setup, kwargs, says):
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt", seed=0)
    if setup == "head":
        (ckpt / "action_head--150000_checkpoint.pt").write_bytes(b"")
    elif setup == "six_dim_stats":
        stats = json.loads((ckpt / "dataset_statistics.json").read_text())
        stats["libero_10_no_noops"]["action"] = {k: v[:6] for k, v in stats["libero_10_no_noops"]["action"].items()}
        (ckpt / "dataset_statistics.json").write_text(json.dumps(stats))
    elif setup == "lora_without_config":
        torch.save({}, ckpt / "lora_adapter.pt")

    def no_weights(*args, **kw):
        raise AssertionError("weights were read before the export was refused")

    monkeypatch.setattr("verl.models.openvla_oft.checkpoint.read_checkpoint_weights", no_weights)
    with pytest.raises(ExportError) as err:
        export_release(ckpt, tmp_path / "out", **kwargs)
    assert says in str(err.value)
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_non_empty_output(tiny_step, release):
    with pytest.raises(ExportError, match="not empty"):
        export_release(tiny_step, release)


def test_push_to_hub_uploads_the_folder(monkeypatch, release):
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create", repo_id, kw["exist_ok"], kw["private"]))

        def upload_folder(self, folder_path, repo_id, **kw):
            calls.append(("upload", folder_path, repo_id))

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    assert push_to_hub(release, "me/tiny-vla", private=True) == "https://huggingface.co/me/tiny-vla"
    assert calls == [("init", None), ("create", "me/tiny-vla", True, True), ("upload", str(release), "me/tiny-vla")]


# ------------------------------------------------------------------------------------------------ LoRA
def test_lora_step_exports_merged_weights_and_a_peft_adapter(one_rank_group, tmp_path):
    """A LoRA step saved by the actor's own checkpoint code -> merged bf16 weights + lora_adapter/, which
    peft loads onto the base model and merges to the same weights."""
    from peft import PeftModel

    from verl.utils import fsdp_utils
    from verl.workers.checkpoint import save_actor_checkpoint

    base_dir = make_tiny_checkpoint(tmp_path / "base", seed=1)
    model = apply_lora(load_openvla_checkpoint(base_dir), rank=4, alpha=8)
    with torch.no_grad():  # trained factors: B is zero at init
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(len(name))) * 0.05)
    model = fsdp_utils.apply_fsdp2(model, fsdp_utils.build_device_mesh("cpu"), param_dtype=torch.float32,
                                   param_offload=False, reshard_after_forward=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    config = OmegaConf.create({"actor_rollout_ref": {"model": {"lora_rank": 4, "lora_alpha": 8, "path": str(base_dir),
                                                                "target_modules": "all-linear"}}})
    worker = SimpleNamespace(model=model, optimizer=optimizer, lr_scheduler=torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0), rank=0, world_size=1, config=config,
        model_config=load_openvla_checkpoint(base_dir, meta_device=True).config,
        processor=OpenVLAProcessor(build_tiny_tokenizer()))
    step = tmp_path / "run" / "actor" / "global_step_3"
    save_actor_checkpoint(worker, str(step))
    assert json.loads((step / "lora_config.json").read_text())["lora_alpha"] == 8

    release = export_release(step, tmp_path / "release")
    adapter = release / "lora_adapter"
    assert {p.name for p in adapter.iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    assert (adapter_config["peft_type"], adapter_config["r"], adapter_config["lora_alpha"]) == ("LORA", 4, 8)
    assert adapter_config["base_model_name_or_path"] == str(base_dir)

    base_state = {k: v.to(torch.bfloat16).float() for k, v in load_openvla_checkpoint(base_dir).state_dict().items()}
    merged = PeftModel.from_pretrained(load_openvla_checkpoint(base_dir), str(adapter)).merge_and_unload().state_dict()
    exported = load_openvla_checkpoint(release).state_dict()
    changed = [k for k in exported if not torch.equal(exported[k], base_state[k])]
    assert any("q_proj" in k for k in changed) and any("projector.fc1" in k for k in changed)  # the adapter moved them
    for key, value in exported.items():  # the same merge, up to one bf16 rounding step
        torch.testing.assert_close(value, merged[key].to(torch.bfloat16).float(), rtol=2 ** -7, atol=1e-6, msg=key)
