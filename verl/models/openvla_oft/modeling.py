"""`OpenVLAForActionPrediction`: vision towers -> projector -> Llama, returning the 256 action-bin logits.

Sequence layout per row (prompts are LEFT-padded, so every prompt ends at the same column):
    [PAD..., BOS, image patches (n*256) (+1 proprio token), prompt tokens..., 29871, <action part>]
OFT (`parallel_decoding`): <action part> = chunk*dim zeroed placeholder embeddings + STOP, and ONE
bidirectional forward gives all action logits (the last prompt token predicts the first action).
Plain openvla: <action part> = the action tokens, causal; sampling decodes them one by one with a KV cache.
Position ids count real tokens only, so a padded row computes exactly what it would alone.

Call the model through `forward` / `__call__` (as `action_logits` does): FSDP2 gathers parameters in
forward hooks, which a direct call to another method would bypass.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor

from verl.models.openvla_oft.configuration import OpenVLAConfig
from verl.models.openvla_oft.constants import (
    ACTION_TOKEN_BEGIN,
    ACTION_TOKEN_END,
    BOS_TOKEN_ID,
    EOS_TOKEN_ID,
    N_ACTION_BINS,
    SPACE_TOKEN_ID,
)
from verl.models.openvla_oft.language_model import build_llama, decoder_attention_mask, resolve_attn_implementation
from verl.models.openvla_oft.projectors import FusedMLPProjector, ProprioProjector
from verl.models.openvla_oft.vision import FusedVisionBackbone

logger = logging.getLogger(__name__)


def sample_action_bins(
    logits: torch.Tensor, temperature: float, greedy: bool, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Action-bin logits [..., 256] -> bin indices [...]: argmax, or a draw from softmax(logits / T)."""
    if greedy:
        return logits.argmax(dim=-1)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for sampling (use greedy=True for argmax), got {temperature}")
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    flat = torch.multinomial(probs.reshape(-1, N_ACTION_BINS), num_samples=1, generator=generator)  # [N, 1]
    return flat.reshape(logits.shape[:-1])


class OpenVLAForActionPrediction(nn.Module):
    """OpenVLA / OpenVLA-OFT policy with the released checkpoints' module tree and parameter names."""

    def __init__(self, config: OpenVLAConfig, attn_implementation: Optional[str] = None) -> None:
        super().__init__()
        self.config = config
        self.attn_implementation = resolve_attn_implementation(attn_implementation)
        self.bidirectional = config.parallel_decoding
        self.num_action_tokens = config.num_action_tokens

        self.vision_backbone = FusedVisionBackbone(config)
        llm_dim = config.llm_config()["hidden_size"]
        self.projector = FusedMLPProjector(self.vision_backbone.embed_dim, llm_dim)
        self.language_model = build_llama(config, self.attn_implementation, bidirectional=self.bidirectional)
        self.proprio_projector = ProprioProjector(config.proprio_dim, llm_dim) if config.use_proprio else None

    # ----------------------------------------------------------------------------------------- structure
    def vision_blocks(self) -> list[nn.Module]:
        """Transformer blocks of both vision towers (units for per-block FSDP wrapping)."""
        return self.vision_backbone.blocks()

    def decoder_layers(self) -> list[nn.Module]:
        """Llama decoder layers (units for per-block FSDP wrapping / activation checkpointing)."""
        return list(self.language_model.model.layers)

    def gradient_checkpointing_enable(self) -> None:
        llm = self.language_model
        if hasattr(llm, "activation_checkpointing_enable"):  # the 5.x name of gradient_checkpointing_enable
            llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.vision_backbone.set_grad_checkpointing(True)

    # ------------------------------------------------------------------------------------------ helpers
    @staticmethod
    def _check_prompt_batch(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Validate left-padded prompts; return the number of padding tokens per row [B]."""
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"input_ids and attention_mask must both be [B, L]; got {tuple(input_ids.shape)} and "
                f"{tuple(attention_mask.shape)}"
            )
        valid = attention_mask.bool()
        pad_count = (~valid).sum(dim=1)  # [B]
        first_token = input_ids.gather(1, pad_count.clamp(max=input_ids.shape[1] - 1)[:, None])[:, 0]
        bad = (
            (valid[:, 1:].int() < valid[:, :-1].int()).any(dim=1)  # a pad after a real token: not left-padded
            | ~valid[:, -1]
            | (first_token != BOS_TOKEN_ID)
            | (input_ids[:, -1] != SPACE_TOKEN_ID)
        )
        if bool(bad.any()):  # one host sync per call
            rows = bad.nonzero()[:, 0].tolist()
            raise ValueError(
                f"prompt rows {rows} are not LEFT-padded prompts of the form [PAD..., BOS={BOS_TOKEN_ID}, ..., "
                f"{SPACE_TOKEN_ID}] (use OpenVLAProcessor.tokenize_prompts)"
            )
        return pad_count

    def _prefix_embeddings(
        self, pixel_values: torch.Tensor, proprio: Optional[torch.Tensor], dtype: torch.dtype
    ) -> torch.Tensor:
        """Projected image patches (+ the proprio token): [B, n*256 (+1), D]."""
        patches = self.projector(self.vision_backbone(pixel_values.to(dtype)))  # [B, n*256, D]
        if self.proprio_projector is None:
            if proprio is not None:
                raise ValueError("proprio was given but config.use_proprio is False")
            return patches
        if proprio is None:
            raise ValueError("config.use_proprio is True: pass proprio [B, proprio_dim]")
        proprio_token = self.proprio_projector(proprio.to(dtype))[:, None, :]  # [B, 1, D]
        return torch.cat([patches, proprio_token], dim=1)

    @staticmethod
    def _insert_after_bos(
        text_embeds: torch.Tensor, text_valid: torch.Tensor, prefix: torch.Tensor, pad_count: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Place `prefix` right after each row's BOS (which sits at column pad_count[b])."""
        batch, text_len, dim = text_embeds.shape
        prefix_len = prefix.shape[1]
        position = torch.arange(text_len + prefix_len, device=text_embeds.device)[None, :]  # [1, T]
        bos = pad_count[:, None]  # [B, 1]
        source = torch.where(
            position <= bos,
            position,  # padding and BOS
            torch.where(position <= bos + prefix_len, text_len + position - bos - 1, position - prefix_len),
        )  # [B, T] index into cat(text, prefix)
        embeds = torch.cat([text_embeds, prefix], dim=1).gather(1, source[..., None].expand(-1, -1, dim))  # [B, T, D]
        prefix_valid = torch.ones(batch, prefix_len, dtype=text_valid.dtype, device=text_valid.device)
        valid = torch.cat([text_valid, prefix_valid], dim=1).gather(1, source)  # [B, T]
        return embeds, valid

    def _decode(
        self,
        embeds: torch.Tensor,
        key_valid: torch.Tensor,
        position_ids: torch.Tensor,
        causal: bool,
        past_key_values=None,
        use_cache: bool = False,
    ):
        mask = decoder_attention_mask(key_valid, self.attn_implementation, causal, query_length=embeds.shape[1])
        return self.language_model.model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
        )

    def _action_bin_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [B, A, D] -> action-bin logits [B, A, 256] in float32.

        Only the 256 action rows of lm_head are multiplied (the full 32064-row product dominated the tiny
        model's CPU forward). A separately FSDP-sharded lm_head (DTensor weight) is called as a module
        instead, so its unshard hook runs.
        """
        lm_head = self.language_model.lm_head
        if isinstance(lm_head.weight, DTensor):
            return lm_head(hidden)[..., ACTION_TOKEN_BEGIN:ACTION_TOKEN_END].float()
        return F.linear(hidden, lm_head.weight[ACTION_TOKEN_BEGIN:ACTION_TOKEN_END]).float()

    def _multimodal_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        proprio: Optional[torch.Tensor],
        suffix_ids: Optional[torch.Tensor],
        zero_suffix: int,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Embeddings [B, T, D] and validity [B, T] of the multimodal sequence, and the prefix length.

        `suffix_ids` are appended after the prompt; their first `zero_suffix` embeddings are zeroed.
        """
        pad_count = self._check_prompt_batch(input_ids, attention_mask)
        embed = self.language_model.model.embed_tokens
        text_embeds = embed(input_ids)  # [B, L, D]
        text_valid = attention_mask.to(torch.long)
        if suffix_ids is not None:
            suffix_embeds = embed(suffix_ids)  # [B, S, D]
            if zero_suffix:
                keep = torch.ones(suffix_ids.shape[1], 1, dtype=suffix_embeds.dtype, device=suffix_embeds.device)
                keep[:zero_suffix] = 0
                suffix_embeds = suffix_embeds * keep  # OFT: placeholder inputs carry no information
            text_embeds = torch.cat([text_embeds, suffix_embeds], dim=1)
            text_valid = torch.cat([text_valid, torch.ones_like(suffix_ids)], dim=1)
        prefix = self._prefix_embeddings(pixel_values, proprio, text_embeds.dtype)
        embeds, valid = self._insert_after_bos(text_embeds, text_valid, prefix, pad_count)
        return embeds, valid, prefix.shape[1]

    # --------------------------------------------------------------------------------------------- API
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        proprio: Optional[torch.Tensor] = None,
        action_tokens: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Raw action-bin logits [B, num_action_tokens, 256] (float32, not divided by a temperature).

        OFT: one bidirectional forward, `action_tokens` ignored. Plain openvla: teacher-forced causal
        forward over `action_tokens` [B, num_action_tokens] (vocabulary ids 31744..31999), required.
        """
        batch, prompt_len = input_ids.shape
        num_actions = self.num_action_tokens
        if self.bidirectional:
            suffix = torch.full((batch, num_actions + 1), EOS_TOKEN_ID, dtype=input_ids.dtype, device=input_ids.device)
            zero_suffix = num_actions  # placeholders, then STOP
        else:
            if action_tokens is None or tuple(action_tokens.shape) != (batch, num_actions):
                got = None if action_tokens is None else tuple(action_tokens.shape)
                raise ValueError(f"plain openvla needs action_tokens of shape {(batch, num_actions)}, got {got}")
            suffix, zero_suffix = action_tokens.to(input_ids.dtype), 0
        embeds, valid, prefix_len = self._multimodal_inputs(
            input_ids, attention_mask, pixel_values, proprio, suffix, zero_suffix
        )
        position_ids = (valid.cumsum(dim=1) - 1).clamp(min=0)
        hidden = self._decode(embeds, valid, position_ids, causal=not self.bidirectional).last_hidden_state
        first = prefix_len + prompt_len - 1  # the last prompt token predicts the first action token
        return self._action_bin_logits(hidden[:, first : first + num_actions])  # [B, A, 256]

    def prompt_hidden_state(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        proprio: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The language model's last hidden state at the last prompt position [B, D], from images +
        prompt alone (no action part): what a value head reads (see value_model.py). Called from a
        wrapping module's forward, so FSDP2's hooks on that root have gathered the parameters."""
        embeds, valid, _ = self._multimodal_inputs(input_ids, attention_mask, pixel_values, proprio, None, 0)
        position_ids = (valid.cumsum(dim=1) - 1).clamp(min=0)
        hidden = self._decode(embeds, valid, position_ids, causal=not self.bidirectional).last_hidden_state
        return hidden[:, -1]  # left-padded: every row's prompt ends in the last column

    def action_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        proprio: Optional[torch.Tensor] = None,
        action_tokens: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Same as calling the model: [B, num_action_tokens, 256] raw action-bin logits."""
        return self(input_ids, attention_mask, pixel_values, proprio=proprio, action_tokens=action_tokens)

    @torch.no_grad()
    def sample_action_tokens(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        proprio: Optional[torch.Tensor] = None,
        temperature: float = 1.0,
        greedy: bool = False,
        generator: Optional[torch.Generator] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(token ids [B, A] in 31744..31999, raw action-bin logits [B, A, 256] they were drawn from)."""
        if self.bidirectional:
            logits = self(input_ids, attention_mask, pixel_values, proprio=proprio)
            bins = sample_action_bins(logits, temperature, greedy, generator)
            return bins + ACTION_TOKEN_BEGIN, logits
        return self._sample_autoregressive(
            input_ids, attention_mask, pixel_values, proprio, temperature, greedy, generator
        )

    def _sample_autoregressive(self, input_ids, attention_mask, pixel_values, proprio, temperature, greedy, generator):
        """Plain openvla: one causal prefill, then one cached step per action token."""
        embeds, valid, _ = self._multimodal_inputs(input_ids, attention_mask, pixel_values, proprio, None, 0)
        position_ids = (valid.cumsum(dim=1) - 1).clamp(min=0)
        out = self._decode(embeds, valid, position_ids, causal=True, use_cache=True)
        last_hidden, past = out.last_hidden_state[:, -1:], out.past_key_values  # [B, 1, D]
        next_position = position_ids[:, -1:] + 1  # [B, 1]
        tokens, logits = [], []
        for step in range(self.num_action_tokens):
            step_logits = self._action_bin_logits(last_hidden)  # [B, 1, 256]
            token = sample_action_bins(step_logits, temperature, greedy, generator) + ACTION_TOKEN_BEGIN  # [B, 1]
            tokens.append(token)
            logits.append(step_logits)
            if step == self.num_action_tokens - 1:
                break
            valid = torch.cat([valid, torch.ones_like(token)], dim=1)
            out = self._decode(
                self.language_model.model.embed_tokens(token), valid, next_position, causal=True,
                past_key_values=past, use_cache=True,
            )
            last_hidden, past = out.last_hidden_state, out.past_key_values
            next_position = next_position + 1
        return torch.cat(tokens, dim=1), torch.cat(logits, dim=1)
