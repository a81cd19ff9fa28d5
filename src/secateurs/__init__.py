"""secateurs: decoding-time alignment of language models, batched and KV-cached."""

__version__ = "0.2.0.dev0"  # first: the modules below read it (results of other versions are not mixed)

from .aligner import Aligner
from .api import align
from .backends.transformers import TransformersBackend
from .config import build_config
from .errors import RewardError, SecateursError
from .meter import Cost
from .models import load_policy
from .policy import Policy
from .prompts import Prompt, builtin_prompts, load_prompts
from .results import AlignResult
from .rewards import Reward, load_reward
from .sampling import SamplingParams
from .scheduler import Request, Scheduler
from .sequence import Sequence

__all__ = ["align", "Aligner", "AlignResult", "build_config", "Cost", "Policy", "Prompt", "Request", "Reward",
           "RewardError", "SamplingParams", "Scheduler", "SecateursError", "Sequence", "TransformersBackend",
           "builtin_prompts", "load_policy", "load_prompts", "load_reward"]
