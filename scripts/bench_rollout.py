#!/usr/bin/env python
"""Rollout benchmark: how close the rollout engine gets to bare env stepping, where its time goes,
what the pipelining option buys, and what one trajectory costs in memory. Prints and saves JSON.

    python scripts/bench_rollout.py [--suite libero_spatial] [--workers 2] [--envs-per-worker 2]
        [--episodes 8] [--max-steps 64] [--model-cores auto] [--env-cores auto] [--overlap-models small,medium]
        [--out bench_rollout.json]

Measured in one run:
  bare:      `workers` processes on the env cores, each looping `adapter.step` on its own envs (no
             pool, no model), rendering as the pool does, and (for reference) rendering every step
  engine:    EnvRollout with the tiny OpenVLA-OFT (forward cost negligible) against an EnvPool of
             `workers` processes on the env cores: efficiency = its env steps/s / bare env steps/s
  overlap:   EnvRollout with larger models of the same architecture (`--overlap-models`: "small"
             costs about a third of the env time, "medium" about as much as the envs),
             pipeline_stages=1 and 2. Model time = the model's time in the unpipelined run (it runs
             alone then); env time = the same env steps at the bare rate, and (stricter, reported
             too) through the engine with the tiny model; ratio = wall / max(model time, env time).
             Also from the pipelined run's own clocks (model time, busiest env worker's busy time),
             which machine drift between runs cannot bias.
Placement: on a GPU node the model runs on the GPU and the simulators on CPU cores, so the two
overlap. Here the model process gets `--model-cores` and the env workers `--env-cores` (auto:
the first core for the model, the rest for the envs; `none` shares every core, as before pinning).
Memory: bytes of the trajectory batch per episode, and for a 512-step LIBERO episode (64 calls).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


CHUNK = 8  # actions per model call (LIBERO)
OVERLAP_MODELS = {  # tiny_config size knobs; forward seconds for 2 LIBERO rows on one 2026 CPU core
    "tiny": {},  # 4.4M params, 0.03 s
    "small": {"vision_width": 256, "vision_depth": 4, "llm_hidden": 512, "llm_layers": 4},  # 55M, 0.57 s
    "medium": {"vision_width": 384, "vision_depth": 6, "llm_hidden": 768, "llm_layers": 6},  # 120M, 0.95 s
}


def parse_cores(text: str, role: str) -> list[int] | None | str:
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise SystemExit(f"--{role}-cores={text!r}: expected auto, none or a comma-separated core list like 0 or 1,2,3")


def placement(model_arg: str, env_arg: str) -> tuple[list[int] | None, list[int] | None]:
    """(model cores, env cores); auto splits off the first core for the model."""
    from verl.utils.cpu_affinity import available_cores, check_cores

    cores = sorted(available_cores())
    model, env = parse_cores(model_arg, "model"), parse_cores(env_arg, "env")
    if model == "auto":
        model = cores[:1] if len(cores) > 1 else None
    if env == "auto":
        env = [c for c in cores if c not in (model or [])] if model else None
    try:
        return (None if model is None else list(check_cores(model, "--model-cores")),
                None if env is None else list(check_cores(env, "--env-cores")))
    except ValueError as err:
        raise SystemExit(str(err))


def _bare_worker(benchmark: str, suite: str, specs: list, slots: int, max_steps: int, seed: int,
                 render_every_step: bool, env_cores, action_stats: dict, queue) -> None:
    """Run this process's episodes one after the other on `slots` envs (episode k on env k % slots,
    as the pool's slots take turns) to their budget; report steps and seconds. Actions are what an
    untrained policy emits: uniform normalised chunks through the rollout's own un-normalisation
    (physics cost depends on the motions, so the baseline must move like the rollout does).

    render_every_step=False renders only the observation the policy would act on (the last step
    of each chunk of 8), as the pool does; True renders every step, as the reference does."""
    from verl.envs.base import make_adapter
    from verl.envs.config import EnvPoolConfig
    from verl.envs.rendering import apply_gl_backend, select_gl_backend
    from verl.utils.cpu_affinity import pin_process
    from verl.workers.rollout.policy_env_io import env_actions

    pin_process(env_cores)  # where the pool's workers run
    config = EnvPoolConfig(benchmark=benchmark, max_episode_steps=max_steps)
    if benchmark in ("libero", "robotwin2"):
        apply_gl_backend(select_gl_backend())
    rng = np.random.default_rng(seed)
    adapters = [make_adapter(benchmark, config) for _ in specs[:slots]]
    for adapter, spec in zip(adapters, specs):
        adapter.reset(spec)  # cold: builds the simulator (the rollout's warm-up pass does the same)
    steps, start = 0, time.perf_counter()
    for k, spec in enumerate(specs):
        adapter = adapters[k % len(adapters)]
        adapter.reset(spec)  # warm reset incl. the no-op wait, as every rollout episode does
        for t in range(max_steps):
            if t % CHUNK == 0:
                chunk = env_actions(rng.uniform(-1, 1, size=(CHUNK, adapter.action_dim)), benchmark, action_stats)
            _, done, _ = adapter.step(chunk[t % CHUNK], render=render_every_step or t % CHUNK == CHUNK - 1)
            steps += 1
            if done:
                break
    queue.put((steps, time.perf_counter() - start))
    for adapter in adapters:
        adapter.close()


def bare_stepping(benchmark: str, specs: list, workers: int, slots: int, max_steps: int, render_every_step: bool,
                  env_cores, action_stats: dict) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    shares = [specs[w::workers] for w in range(workers)]
    procs = [ctx.Process(target=_bare_worker, args=(benchmark, specs[0].task_suite_name, share, slots, max_steps, w, render_every_step,
                                                env_cores, action_stats, queue))
             for w, share in enumerate(shares)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    steps = sum(r[0] for r in results)
    wall = max(r[1] for r in results)
    return {"env_steps": steps, "wall_s": wall, "env_steps_per_s": steps / wall}


def rollout(benchmark: str, suite: str, specs: list, workers: int, envs_per_worker: int, max_steps: int,
            stages: int, ckpt: Path, model_cores, env_cores, action_stats: dict) -> tuple[dict, dict]:
    import torch

    from verl.envs.env_pool import EnvPool
    from verl.envs.config import EnvPoolConfig
    from verl.models.openvla_oft import OpenVLAProcessor, load_openvla_checkpoint
    from verl.protocol import DataProto
    from verl.utils.cpu_affinity import pin_process
    from verl.workers import trajectory as tj
    from verl.workers.policy_inputs import PolicyInputBuilder
    from verl.workers.rollout.env_rollout import EnvRollout, RolloutSettings

    model = load_openvla_checkpoint(ckpt).eval()
    processor = OpenVLAProcessor.from_pretrained(ckpt)
    pool = EnvPool(EnvPoolConfig(benchmark=benchmark, num_workers=workers, envs_per_worker=envs_per_worker,
                                 max_episode_steps=max_steps, num_steps_wait=10 if benchmark == "libero" else 0,
                                 cpu_cores=env_cores))
    pin_process(model_cores)  # after the pool started: its workers must not inherit the model's cores
    settings = RolloutSettings(benchmark=benchmark, temperature=1.6, action_chunk=CHUNK, action_dim=7,
                               max_env_steps=max_steps, pipeline_stages=stages)
    inputs = PolicyInputBuilder(processor.preprocess_images, model.config.pad_token_id, torch.device("cpu"))
    engine = EnvRollout(model, processor.prompt_token_ids, inputs, pool, settings, action_stats)
    prompts = DataProto.from_dict(non_tensors={
        tj.TASK_SUITE_NAME: np.array([s.task_suite_name for s in specs], dtype=object),
        tj.TASK_ID: np.array([s.task_id for s in specs], dtype=object),
        tj.TRIAL_ID: np.array([s.trial_id for s in specs], dtype=object),
    })
    # warm-up: builds every task's env once (the bare loop also builds before it starts timing)
    engine.generate_sequences(prompts, greedy=False, seed=0)
    start = time.perf_counter()
    out = engine.generate_sequences(prompts, greedy=False, seed=1)
    wall = time.perf_counter() - start
    pool.close()
    s = engine.stats
    result = {"pipeline_stages": stages, "model_params_M": sum(p.numel() for p in model.parameters()) / 1e6,
              "env_steps": s.env_steps, "wall_s": wall, "env_steps_per_s": s.env_steps / wall, "model_s": s.model_s,
              "env_wait_s": s.env_wait_s, "env_busy_s": s.env_busy_s, "forwards": s.forwards,
              "forward_rows": s.forward_rows}
    return result, memory_per_trajectory(out)


def memory_per_trajectory(batch) -> dict:
    """Bytes per episode of the trajectory batch, measured and for a 512-step LIBERO episode."""
    n = len(batch)
    tensor_bytes = sum(t.numel() * t.element_size() for t in batch.batch.values())
    prompt_bytes = sum(p.nbytes for p in batch.non_tensor_batch["prompt_ids"])
    steps = batch.batch["responses"].shape[1]
    per_step = sum(t[0].numel() * t.element_size() for k, t in batch.batch.items() if t.dim() >= 2) / steps
    libero_512 = per_step * 64  # 512 env steps / chunk 8
    return {"measured_bytes_per_episode": (tensor_bytes + prompt_bytes) / n, "steps_axis": steps,
            "bytes_per_model_call": per_step, "libero_512_step_episode_MB": libero_512 / 1e6,
            "reference_MB": 77.0}


def paired_efficiency(args, results: dict, ckpt: Path, specs: list, benchmark: str, model_cores, env_cores,
                      action_stats: dict, all_cores, all_threads) -> int:
    """Rounds of bare, engine stages=1, engine stages=2, ..., bare: every engine run's env steps/s over
    the mean bare rate of the bare runs bracketing it, so the machine's drift over minutes (shared
    VMs vary by 10-20%) cancels; the median over rounds is the figure."""
    import torch

    from verl.utils.cpu_affinity import set_process_affinity

    def bare_rate() -> float:
        r = bare_stepping(benchmark, specs, args.workers, args.envs_per_worker, args.max_steps, False, env_cores,
                          action_stats)
        print("bare:", json.dumps(r))
        return r["env_steps_per_s"]

    def engine(stages: int) -> dict:
        try:
            result, _ = rollout(benchmark, args.suite, specs, args.workers, args.envs_per_worker, args.max_steps,
                                stages, ckpt, model_cores, env_cores, action_stats)
        finally:
            set_process_affinity(all_cores)
            torch.set_num_threads(all_threads)
        print(f"engine stages={stages}:", json.dumps(result))
        return result

    rounds, bares = [], [bare_rate()]
    for _ in range(args.paired_rounds):
        before = bares[-1]
        runs = {stages: engine(stages) for stages in (1, 2)}
        after = bare_rate()
        bares.append(after)
        reference = (before + after) / 2
        rounds.append({"bare_before": before, "bare_after": after,
                       **{f"stages{k}_env_steps_per_s": r["env_steps_per_s"] for k, r in runs.items()},
                       **{f"stages{k}_efficiency": r["env_steps_per_s"] / reference for k, r in runs.items()},
                       **{f"stages{k}_model_s": r["model_s"] for k, r in runs.items()}})
        print("round:", json.dumps(rounds[-1]))
    results["paired_rounds"] = rounds
    for k in (1, 2):
        results[f"stages{k}_efficiency_median"] = float(np.median([r[f"stages{k}_efficiency"] for r in rounds]))
    results["bare_rate_spread"] = max(bares) / min(bares)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"efficiency vs bare, median of {len(rounds)} rounds: stages=1 {results['stages1_efficiency_median']:.3f}, "
          f"stages=2 {results['stages2_efficiency_median']:.3f}; wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="libero_spatial")
    parser.add_argument("--workers", type=int, default=None,
                        help="env worker processes (default: one per env core, or 2 when not pinned)")
    parser.add_argument("--envs-per-worker", type=int, default=None,
                        help="env slots per worker (default: 4 slots in all, at least 2 per worker)")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=64, help="env steps per episode (8 model calls)")
    parser.add_argument("--model-cores", default="auto", help="auto | none | e.g. 0")
    parser.add_argument("--env-cores", default="auto", help="auto | none | e.g. 1 or 1,2,3")
    parser.add_argument("--overlap-models", default="small,medium",
                        help=f"comma-separated models of the overlap runs, from {sorted(OVERLAP_MODELS)}")
    parser.add_argument("--paired-rounds", type=int, default=0,
                        help="only the drift-proof efficiency: N rounds of bare, engine (pipeline_stages=1), engine "
                             "(pipeline_stages=2), bare ...; each engine run is compared with the mean of the bare runs "
                             "just before and after it (no render-every-step or overlap runs)")
    parser.add_argument("--out", type=Path, default=Path("bench_rollout.json"))
    args = parser.parse_args(argv)
    if args.paired_rounds < 0:
        raise SystemExit(f"--paired-rounds={args.paired_rounds}: expected an integer >= 0")
    os.environ.setdefault("MUJOCO_GL", "egl")

    import torch

    from verl.envs.base import EnvSpec
    from verl.envs.suites import benchmark_of
    from verl.models.openvla_oft import get_action_norm_stats, load_dataset_statistics
    from verl.models.openvla_oft.tiny import make_tiny_checkpoint
    from verl.utils.cpu_affinity import available_cores, set_process_affinity

    model_cores, env_cores = placement(args.model_cores, args.env_cores)
    overlap_models = [m for m in args.overlap_models.split(",") if m]
    unknown = sorted(set(overlap_models) - set(OVERLAP_MODELS))
    if unknown:
        raise SystemExit(f"--overlap-models: unknown {unknown}; expected names from {sorted(OVERLAP_MODELS)}")
    args.workers = args.workers or (len(env_cores) if env_cores else 2)
    args.envs_per_worker = args.envs_per_worker or max(2, 4 // args.workers)
    all_cores, all_threads = sorted(available_cores()), torch.get_num_threads()
    benchmark = benchmark_of(args.suite).value
    specs = [EnvSpec(benchmark, args.suite, task_id=i % 2, trial_id=i) for i in range(args.episodes)]
    workdir = Path(tempfile.mkdtemp())
    tiny = make_tiny_checkpoint(workdir / "tiny")
    action_stats = get_action_norm_stats(load_dataset_statistics(tiny), "reach" if benchmark == "reach" else args.suite)
    results: dict = {"suite": args.suite, "workers": args.workers, "envs_per_worker": args.envs_per_worker,
                     "episodes": args.episodes, "max_steps": args.max_steps, "cpus": len(all_cores),
                     "model_cores": model_cores, "env_cores": env_cores}
    print(f"placement: model on cores {model_cores or 'all'}, env workers on cores {env_cores or 'all'}")

    def bare(name: str, render_every_step: bool, what: str) -> dict:
        results[name] = bare_stepping(benchmark, specs, args.workers, args.envs_per_worker, args.max_steps,
                                      render_every_step, env_cores, action_stats)
        print(f"bare ({what}):", json.dumps(results[name]))
        return results[name]

    if args.paired_rounds:
        return paired_efficiency(args, results, tiny, specs, benchmark, model_cores, env_cores, action_stats,
                                 all_cores, all_threads)
    bare("bare", False, "same rendering as the pool")
    bare("bare_render_every_step", True, "rendering every step, as the reference")
    bare_rate = results["bare"]["env_steps_per_s"]

    def run(name: str, ckpt: Path, stages: int) -> dict:
        try:
            result, memory = rollout(benchmark, args.suite, specs, args.workers, args.envs_per_worker,
                                     args.max_steps, stages, ckpt, model_cores, env_cores, action_stats)
        finally:  # the next pool's workers start from this process: give it every core back
            set_process_affinity(all_cores)
            torch.set_num_threads(all_threads)
        result["efficiency_vs_bare"] = result["env_steps_per_s"] / bare_rate
        result["speedup_vs_reference_style"] = (result["env_steps_per_s"]
                                                / results["bare_render_every_step"]["env_steps_per_s"])
        results[name], results["memory"] = result, memory
        print(f"{name}:", json.dumps(result))
        return result

    engine = run("engine_tiny_model", tiny, 1)
    engine_env_rate = engine["env_steps"] / (engine["wall_s"] - engine["model_s"])  # the engine, model ~free
    for name in overlap_models:
        ckpt = make_tiny_checkpoint(workdir / f"overlap_{name}", **OVERLAP_MODELS[name])
        unpipelined = run(f"overlap_{name}_stages1", ckpt, 1)
        pipelined = run(f"overlap_{name}_stages2", ckpt, 2)
        model_s = unpipelined["model_s"]  # the model alone: nothing else runs on its cores then
        env_s = pipelined["env_steps"] / bare_rate  # the same env steps at the bare rate
        results[f"overlap_{name}"] = summary = {
            "model_params_M": pipelined["model_params_M"], "model_s": model_s, "env_s": env_s,
            "env_s_engine_tiny_model": pipelined["env_steps"] / engine_env_rate,
            "stages1_wall_over_max_model_env": unpipelined["wall_s"] / max(model_s, env_s),
            "stages2_wall_over_max_model_env": pipelined["wall_s"] / max(model_s, env_s),
            "stages2_wall_over_max_model_env_strict": pipelined["wall_s"] / max(model_s, min(env_s, pipelined["env_steps"] / engine_env_rate)),
            "stages2_speedup_over_stages1": unpipelined["wall_s"] / pipelined["wall_s"],
            # the same ratio from one run's own clocks (immune to the machine's drift between runs):
            # model time and the busiest env worker's time, both measured during the pipelined run
            "stages2_wall_over_max_model_env_same_run": pipelined["wall_s"] / max(pipelined["model_s"], pipelined["env_busy_s"]),
            "target": 1.15,
        }
        print(f"overlap {name}:", json.dumps(summary))
    # the machine's own drift over the run (shared VMs vary): the same bare loops again
    bare("bare_again_at_end", False, "again at the end")
    print("memory:", json.dumps(results["memory"]))
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
