"""One batch of canary prompts through the base and every adapter, on the model's device.

For each prompt: the base's greedy output (once), then per adapter the teacher-forced drift
scores over the reference (or, without one, over the base's own greedy continuation) and the
adapter's greedy output. The base's hidden states are computed once per batch and shared by
every adapter; logits are made a chunk of positions at a time (``lorawatch.monitors.logit_drift``).

For Llama-style models (``lorawatch.monitors.fast_decode``) the base and all adapters run as groups of
one batch, both for the teacher-forced pass and for generation; otherwise PEFT runs one pass
per adapter.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from lorawatch.models import chat_prompt
from lorawatch.monitors.dataset import CanaryPrompt
from lorawatch.monitors.logit_drift import base_logprobs, score

log = logging.getLogger(__name__)

# Base log-probs shared by all adapters of a batch are kept when they fit this many bytes.
BASE_LOGPROBS_BUDGET = {"cuda": 16 << 30, "cpu": 1 << 30}


@dataclass
class Generation:
    """Greedy outputs of one model for a batch."""

    token_ids: list[list[int]]
    texts: list[str]
    seconds: float


@dataclass
class BatchResult:
    """Everything one batch produced, as plain Python values."""

    prompts: list[CanaryPrompt]
    base: Generation
    scored_on: list[str]
    adapters: dict[str, dict] = field(default_factory=dict)  # key -> {"scores": ..., "generation": Generation}
    truncated: list[dict] = field(default_factory=list)  # CanaryModels.truncated of these prompts


class CanaryModels:
    """A PeftModel holding every adapter of a run, with what the batch code needs of it; or the
    plain base (transformers', or built without it by ``lorawatch.llama_file``) with the
    adapters' LoRA factors read from their files (``factors``, per adapter key:
    ``lorawatch.monitors.lora_files``), for the grouped decoder, which then needs no PEFT."""

    def __init__(
        self, peft_model, tokenizer, device, max_new_tokens: int, fast_decode: bool = True, factors=None
    ) -> None:
        if factors is not None and not fast_decode:
            raise ValueError("LoRA factors without PEFT need the grouped decoder (fast_decode)")
        self.peft = peft_model
        self.factors = factors
        self.tokenizer = tokenizer
        self.device = device
        get_base_model = getattr(peft_model, "get_base_model", None)  # a PeftModel's; plain models have none
        core = get_base_model() if get_base_model is not None else peft_model
        self.decoder = core.get_decoder()
        self.lm_head = core.get_output_embeddings()
        self.softcap = getattr(core.config, "final_logit_softcapping", None)
        self.max_positions = int(getattr(core.config, "max_position_embeddings", 2048) or 2048)
        # (prompt id, "prompt" | "reference") -> what was cut to fit the context (prompt_ids, reference_ids)
        self.truncated: dict[tuple[str, str], dict] = {}
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        eos = tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eos_ids), 0)
        self.max_new_tokens = max_new_tokens
        self.fast_decode = fast_decode
        # score every adapter in one grouped pass too (109k against 97k scored tok/s on the H200, benchmarks/README.md)
        self.grouped_scoring = fast_decode
        self._grouped = None
        self._generation_config = None

    @property
    def generation_config(self):
        """Greedy decoding for HF ``generate`` (PEFT's path; the grouped decoder needs none)."""
        if self._generation_config is None:
            # Deferred: transformers takes seconds to import; the grouped decoder never needs it.
            from transformers import GenerationConfig

            self._generation_config = GenerationConfig(
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.pad_id,
                eos_token_id=sorted(self.eos_ids) or None,
            )
        return self._generation_config

    # ------------------------------------------------------------ tokens

    def prompt_ids(self, prompt: CanaryPrompt) -> list[int]:
        """Token ids of the prompt in the model's chat format. A prompt longer than the context
        leaves room for the answer loses tokens from its middle, never its ends: the start holds
        the system prompt and the instruction, the end the last turn and the assistant's header
        (cutting from the left, as before, dropped the instruction). Recorded in ``truncated``."""
        text = chat_prompt(self.tokenizer, prompt.chat())
        ids = self.tokenizer(text, add_special_tokens=not self.has_template)["input_ids"]
        budget = self.max_positions - self.max_new_tokens - 1
        if len(ids) <= budget:
            return ids
        head = budget // 4
        self._truncated(prompt.id, "prompt", len(ids), budget, "the middle")
        return ids[:head] + ids[len(ids) - (budget - head) :]

    def reference_ids(self, prompt: CanaryPrompt, prompt_ids: list[int] | None = None) -> list[int] | None:
        """Token ids of the reference answer, or None without one; cut at the end to what fits in
        the context after the prompt (a longer one would be scored at positions the model never
        saw), and recorded in ``truncated``. ``prompt_ids``: the prompt's, when the caller has
        them (else the prompt is tokenized again)."""
        if prompt.reference is None:
            return None
        ids = self.tokenizer(prompt.reference, add_special_tokens=False)["input_ids"]
        room = self.max_positions - len(prompt_ids if prompt_ids is not None else self.prompt_ids(prompt))
        if len(ids) > room:
            self._truncated(prompt.id, "reference", len(ids), room, "the end")
            ids = ids[:room]
        return ids

    def _truncated(self, prompt_id: str, part: str, tokens: int, kept: int, where: str) -> None:
        if (prompt_id, part) not in self.truncated:
            log.warning(
                "canary prompt %s: its %s has %d tokens, %d fit in the model's context of %d; cut at %s",
                prompt_id,
                part,
                tokens,
                kept,
                self.max_positions,
                where,
            )
        self.truncated[(prompt_id, part)] = {
            "prompt_id": prompt_id,
            "part": part,
            "tokens": tokens,
            "kept": kept,
            "cut": where,
            "context": self.max_positions,
        }

    # ------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]]) -> Generation:
        """Greedy decoding with the active adapter (or none), left-padded batch."""
        width = max(len(ids) for ids in prompt_ids)
        input_ids = torch.full((len(prompt_ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
        for i, ids in enumerate(prompt_ids):
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            mask[i, width - len(ids) :] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        _sync(self.device)
        start = time.perf_counter()
        out = self.peft.generate(input_ids=input_ids, attention_mask=mask, generation_config=self.generation_config)
        _sync(self.device)
        seconds = time.perf_counter() - start
        return self._finish(out[:, width:].tolist(), seconds)

    def _finish(self, rows: list[list[int]], seconds: float) -> Generation:
        token_ids, texts = decode_outputs(self.tokenizer, rows, self.eos_ids)
        return Generation(token_ids, texts, seconds)

    def grouped(self, adapter_keys: list[str]):
        """The grouped decoder for these adapters (``lorawatch.monitors.fast_decode``), or None where it does not apply."""
        if not self.fast_decode:
            return None
        # Deferred: imports torch, which only model work needs.
        from lorawatch.monitors.fast_decode import GroupedDecoder, supported

        if self._grouped is None or self._grouped.keys != list(adapter_keys):
            if self.factors is not None:  # no PEFT to fall back on: the worker checked that this applies
                self._grouped = GroupedDecoder(self.peft, adapter_keys, self.factors)
            else:
                self._grouped = (
                    GroupedDecoder(self.peft, adapter_keys) if supported(self.peft, adapter_keys) is None else False
                )
        return self._grouped or None

    @torch.no_grad()
    def generate_all(
        self, prompt_ids: list[list[int]], adapter_keys: list[str]
    ) -> tuple[Generation, dict[str, Generation]] | None:
        """Greedy outputs of the base and every adapter in one grouped batch; None when it does not apply.

        Each model's ``seconds`` is its share of the whole (the groups decode together).
        """
        decoder = self.grouped(adapter_keys)
        if decoder is None:
            return None
        groups, seconds = decoder.generate(prompt_ids, self.max_new_tokens, self.pad_id, self.eos_ids)
        share = seconds / len(groups)
        base = self._finish(groups[0], share)
        return base, {key: self._finish(rows, share) for key, rows in zip(adapter_keys, groups[1:])}

    # ------------------------------------------------------------ teacher forcing

    def layout(self, prompt_ids: list[list[int]], targets: list[list[int]]):
        """Right-padded sequences and the gathered positions that predict each target token."""
        seqs = [p + t for p, t in zip(prompt_ids, targets)]
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        rows, positions, labels = [], [], []
        for i, (p, t) in enumerate(zip(prompt_ids, targets)):
            input_ids[i, : len(p) + len(t)] = torch.tensor(p + t)
            mask[i, : len(p) + len(t)] = 1
            for j, token in enumerate(t):
                rows.append(i)
                positions.append(len(p) - 1 + j)
                labels.append(token)
        to = self.device
        return (
            input_ids.to(to),
            mask.to(to),
            torch.tensor(rows, device=to),
            torch.tensor(positions, device=to),
            torch.tensor(labels, device=to),
        )

    @torch.no_grad()
    def hidden(self, input_ids, mask, rows, positions) -> torch.Tensor:
        """Final hidden states at the gathered positions, with the active adapter (or none)."""
        states = self.decoder(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
        return states[rows, positions]


def decode_outputs(tokenizer, rows: list[list[int]], eos_ids: set[int]) -> tuple[list[list[int]], list[str]]:
    """Each row cut at its first end-of-sequence token, and its text.

    A model can emit any byte, NUL included, which PostgreSQL's text and JSON columns refuse:
    NUL becomes U+FFFD (the replacement character) here, so every backend stores the same text.
    """
    token_ids = []
    for row in rows:
        cut = next((i for i, t in enumerate(row) if t in eos_ids), len(row))
        token_ids.append(row[:cut])
    texts = tokenizer.batch_decode(token_ids, skip_special_tokens=True)
    return token_ids, [t.replace("\x00", "\ufffd").strip() for t in texts]


def _sync(device) -> None:
    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)


def run_batch(models: CanaryModels, prompts: list[CanaryPrompt], adapter_keys: list[str]) -> BatchResult:
    """Base generation, base hidden states, then per adapter: drift scores and generation."""
    prompt_ids = [models.prompt_ids(p) for p in prompts]
    references = [models.reference_ids(p, ids) for p, ids in zip(prompts, prompt_ids)]
    base, scored_on, adapters = score_and_generate(models, prompt_ids, references, adapter_keys)
    cut = models.truncated
    truncated = [cut[(p.id, part)] for p in prompts for part in ("prompt", "reference") if (p.id, part) in cut]
    return BatchResult(prompts=prompts, base=base, scored_on=scored_on, adapters=adapters, truncated=truncated)


def score_and_generate(
    models: CanaryModels, prompt_ids: list[list[int]], references: list[list[int] | None], adapter_keys: list[str]
) -> tuple[Generation, list[str], dict[str, dict]]:
    """The work of one batch on token ids (what ``run_batch`` and the GPU benchmark call)."""
    peft = models.peft
    grouped = models.generate_all(prompt_ids, adapter_keys)
    if grouped is not None:
        base, generations = grouped
    else:
        with peft.disable_adapter():
            base = models.generate(prompt_ids)
    targets, scored_on = [], []
    for reference, generated in zip(references, base.token_ids):
        if reference:
            targets.append(reference)
            scored_on.append("reference")
        else:
            targets.append(generated or sorted(models.eos_ids)[:1] or [models.pad_id])
            scored_on.append("base_output")
    scores = score_adapters(models, prompt_ids, targets, adapter_keys)
    adapters: dict[str, dict] = {}
    for key in adapter_keys:
        if grouped is None:
            peft.set_adapter(key)
        adapters[key] = {
            "scores": scores[key],
            "generation": generations[key] if grouped is not None else models.generate(prompt_ids),
        }
    return base, scored_on, adapters


def score_adapters(
    models: CanaryModels, prompt_ids: list[list[int]], targets: list[list[int]], adapter_keys: list[str]
) -> dict[str, dict[str, list[float]]]:
    """Teacher-forced drift scores of every adapter: the base's hidden states are computed
    once for the batch and shared by all adapters."""
    peft = models.peft
    input_ids, mask, rows, positions, labels = models.layout(prompt_ids, targets)
    grouped = models.grouped(adapter_keys) if models.grouped_scoring else None
    if grouped is not None:
        hidden = grouped.hidden(input_ids, rows, positions)
        base_hidden = hidden[0]
    else:
        with peft.disable_adapter():
            base_hidden = models.hidden(input_ids, mask, rows, positions)
    # fp32: log-probs rounded to bf16 move a small KL by tens of percent (measured on the H200)
    budget = BASE_LOGPROBS_BUDGET["cuda" if base_hidden.device.type == "cuda" else "cpu"]
    cached = base_logprobs(models.lm_head, base_hidden, models.softcap, torch.float32, budget)
    result = {}
    for g, key in enumerate(adapter_keys, start=1):
        if grouped is not None:
            adapted_hidden = hidden[g]
        else:
            peft.set_adapter(key)
            adapted_hidden = models.hidden(input_ids, mask, rows, positions)
        result[key] = score(
            models.lm_head,
            base_hidden,
            adapted_hidden,
            labels,
            rows,
            len(prompt_ids),
            softcap=models.softcap,
            base_logprobs=cached,
        ).means()
        del adapted_hidden
    del cached
    return result
