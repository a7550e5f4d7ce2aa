"""SFTWorker: the policy worker (FSDP2 model, AdamW, env pool, checkpoints) with supervised RPCs.

Same machinery and model code as RL (`PolicyWorker` in fsdp_workers.py): the checkpoint an SFT
run writes is exactly what `main_ppo` loads, and the SFT run's closed-loop evaluation is the
RL rollout engine's rollout (`generate_sequences`: greedy, or sampled at eval.temperature).
"""

from __future__ import annotations

from typing import Any, Optional


from verl.protocol import DataProto
from verl.single_controller.base.decorator import Dispatch, register
from verl.workers.actor.bc_learner import BCSettings, BehaviorCloningLearner
from verl.workers.fsdp_workers import PolicyWorker, memory_metrics


class SFTWorker(PolicyWorker):
    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_model(self, norm_stats: Optional[dict[str, Any]] = None) -> None:
        """`norm_stats`: the statistics of the SFT data ({unnorm_key: {...}}), written into every
        checkpoint of this run in place of the initial checkpoint's."""
        cfg = self.config
        self._init_policy(norm_stats=norm_stats)  # sizes torch's CPU threads (use_cpu_threads)
        self.learner = BehaviorCloningLearner(
            BCSettings(
                micro_batch_size=max(1, cfg.data.micro_batch_size // self.world_size),
                grad_clip=cfg.actor_rollout_ref.actor.grad_clip,
                action_dim=cfg.actor_rollout_ref.model.action_token_len,
                use_proprio=cfg.actor_rollout_ref.rollout.use_proprio,
            ),
            model=self.model, inputs=self._policy_inputs(), optimizer=self.optimizer, lr_scheduler=self.lr_scheduler,
        )

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def train_step(self, data: DataProto) -> DataProto:
        metrics = self.learner.train_step(data)
        metrics.update(memory_metrics(self.device))
        return DataProto(meta_info={"metrics": metrics})

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def eval_step(self, data: DataProto) -> DataProto:
        return DataProto(meta_info={"metrics": self.learner.evaluate(data)})
