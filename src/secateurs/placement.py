"""Loading the policy and the reward model together: `load_models`, and how they share one GPU.

run, serve, bench, align() and Ray workers load their models here. On a CPU each model simply
loads (a vllm: RM engine keeps `rm_memory` GiB of KV cache, default 0.5). On a GPU two things
would otherwise go wrong: a vLLM engine takes 90% of the GPU when it starts, leaving no room for
the other model, and a vLLM engine refuses to start when less than its share is free. So:

- The reward model loads first. A vllm: RM engine takes `rm_memory` of the GPU (a fraction, the
  `--rm-memory` setting); by default its share of GPU_SHARE (0.9, vLLM's own default for one
  engine) in proportion to its weights beside the policy's (`memory_split`: a bigger model has
  more keys and values per token too). A pair whose weights alone exceed that is refused in one
  line before anything loads. Weights are read from the model folders (or the Hub's local cache);
  a model whose folder cannot be found counts as big as the other one (an even split).
- With `--backend vllm` the policy engine then takes what is free, less the 10% vLLM keeps back
  and less what an hf: RM on the GPU needs beyond its weights (admission.reward_bytes: a batch's
  activations and its prefix cache), as its gpu_memory_utilization (`policy_share`).
- With the transformers backend the policy loads into what is left; its rows are admitted from the
  memory then free (admission.py), which already excludes the RM engine's share.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .conversation import DEFAULT_PROMPT_FORMAT
from .errors import SecateursError

# Of a GPU, what the engines may take together (vLLM's default gpu_memory_utilization for one engine).
GPU_SHARE = 0.9
# What an hf: RM's activations are sized for when a vLLM policy engine is given the rest of the GPU:
# texts of this many tokens (its batch at this length, and its whole prefix cache).
RM_RESERVE_TOKENS = 4096


def weights_bytes(folder: str | Path | None) -> int:
    """Bytes of a model folder's weight files (safetensors, else bin): what its weights take loaded in that
    dtype; 0 for an unknown folder."""
    if folder is None or not Path(folder).is_dir():
        return 0
    folder = Path(folder)
    for pattern in ("*.safetensors", "*.bin"):  # a folder with both holds the same weights twice
        files = list(folder.glob(pattern))
        if files:
            return sum(f.stat().st_size for f in files)
    return 0


def model_folder(spec: str | Path) -> Path | None:
    """The local folder of a model id or folder: the folder itself, or the Hub cache's snapshot of the id
    (never downloading); None when neither exists."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(spec), local_files_only=True))
    except Exception:  # not cached, not a valid repo id: the caller falls back to an even split
        return None


def memory_split(policy_bytes: int, rm_bytes: int, device_bytes: int, share: float = GPU_SHARE) -> tuple[float, float]:
    """(policy fraction, RM fraction) of a GPU: each gets its weights and a part of what is left for keys and
    values in proportion to its weights (a bigger model has more per token). A model of unknown size (0)
    counts as big as the other."""
    if not policy_bytes or not rm_bytes:
        policy_bytes = rm_bytes = max(policy_bytes, rm_bytes)
    usable = share * device_bytes
    if policy_bytes + rm_bytes >= usable:
        raise SecateursError(
            f"the policy ({policy_bytes / 2**30:.1f} GiB) and the reward model ({rm_bytes / 2**30:.1f} GiB) do not "
            f"fit together in {share:.0%} of this GPU's {device_bytes / 2**30:.1f} GiB: put the reward model on "
            "another GPU or use smaller models")
    if not policy_bytes:
        return share / 2, share / 2
    rm = rm_bytes / (policy_bytes + rm_bytes) * share
    return share - rm, rm


def rm_shares(policy_bytes: int, rm_bytes: dict[str, int], device_bytes: int,
              rm_memory: float | None = None) -> dict[str, float]:
    """Each vllm: RM engine's fraction of the GPU: `rm_memory` for each if given (refused when the RMs would
    leave the policy less than its weights), else its share of the split by weights."""
    if rm_memory is not None:
        left = GPU_SHARE - rm_memory * len(rm_bytes)
        if left * device_bytes <= policy_bytes:
            raise SecateursError(
                f"--rm-memory {rm_memory:g} leaves the policy {max(left, 0) * device_bytes / 2**30:.1f} GiB of this "
                f"GPU's {device_bytes / 2**30:.1f} GiB, less than its {policy_bytes / 2**30:.1f} GiB of weights: give "
                "the reward model less")
        return {model: rm_memory for model in rm_bytes}
    total_rm = sum(rm_bytes.values()) if all(rm_bytes.values()) else 0
    _, rm = memory_split(policy_bytes, total_rm, device_bytes)
    if not total_rm:
        return {model: rm / len(rm_bytes) for model in rm_bytes}
    return {model: rm * b / total_rm for model, b in rm_bytes.items()}


def policy_share(free_bytes: int, total_bytes: int, reserve_bytes: int, policy_bytes: int) -> float:
    """A vLLM policy engine's gpu_memory_utilization once the reward model is loaded: what is free, less what
    the RM still needs (`reserve_bytes`) and the part of the GPU vLLM keeps back (1 - GPU_SHARE); refused in
    one line when that does not hold the policy's weights."""
    share = (free_bytes - reserve_bytes) / total_bytes - (1 - GPU_SHARE)
    if share * total_bytes <= policy_bytes:
        raise SecateursError(
            f"after the reward model, {max(share, 0) * total_bytes / 2**30:.1f} GiB of this GPU's "
            f"{total_bytes / 2**30:.1f} GiB are left for the vLLM policy, less than its "
            f"{policy_bytes / 2**30:.1f} GiB of weights: give the reward model less (--rm-memory) or another GPU")
    return math.floor(share * 1000) / 1000  # rounded down: vLLM refuses a share above what is free


def _policy_bytes(policy) -> int:
    from .models import policy_folder
    from .policy import Policy

    if isinstance(policy, Policy):
        return 0 if policy.model is None else sum(p.numel() * p.element_size() for p in policy.model.parameters())
    return weights_bytes(model_folder(policy_folder(policy)[1]))


def load_models(policy=None, reward=None, backend: str | None = None, device=None, rm_memory: float | None = None,
                prompt_format: str = DEFAULT_PROMPT_FORMAT):
    """(engine, Policy, Reward): the vLLM engine serving the policy (None for the transformers backend), the
    policy prompts are encoded with, and the reward, each given its memory as the module doc says."""
    from .backends import check_backend, make_backend
    from .models import load_policy, resolve_device
    from .rewards import check_rm_memory, load_reward, vllm_reward_models

    name = check_backend(backend)
    check_rm_memory(reward, rm_memory)  # before anything loads
    served = vllm_reward_models(reward)
    dev = resolve_device(device)
    if dev.type != "cuda":
        engine = make_backend(name, policy, device=device) if name != "transformers" else None
        loaded_policy = engine.policy if engine is not None else load_policy(policy, device=device,
                                                                              prompt_format=prompt_format)
        return engine, loaded_policy, load_reward(reward, device=device, prompt_format=prompt_format,
                                                  rm_memory=rm_memory)
    total = torch.cuda.mem_get_info(dev)[1]
    policy_bytes = _policy_bytes(policy)
    memory = None
    if served:
        memory = rm_shares(policy_bytes, {m: weights_bytes(model_folder(m)) for m in served}, total, rm_memory)
    # The RM first: a vLLM engine checks at start that its share is free.
    loaded_reward = load_reward(reward, device=device, prompt_format=prompt_format, rm_memory=memory)
    if name == "transformers":
        return None, load_policy(policy, device=device, prompt_format=prompt_format), loaded_reward
    from .admission import reward_bytes

    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(dev)
    reserve = reward_bytes(loaded_reward, dev, RM_RESERVE_TOKENS, rows=2**20)
    share = policy_share(free, total, reserve, policy_bytes)
    engine = make_backend(name, policy, device=device, gpu_memory_utilization=share)
    return engine, engine.policy, loaded_reward
