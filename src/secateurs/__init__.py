"""secateurs: decoding-time alignment of language models, batched and KV-cached."""

__version__ = "0.1.0"  # first: the modules below read it

from .api import align
from .errors import RewardError, SecateursError
from .meter import Cost
from .models import load_policy
from .policy import Policy
from .prompts import Prompt, builtin_prompts, load_prompts
from .results import AlignResult
from .rewards import Reward, load_reward
from .sampling import SamplingParams

__all__ = ["align", "AlignResult", "Cost", "Policy", "Prompt", "Reward", "RewardError", "SamplingParams", "SecateursError", "builtin_prompts", "load_policy", "load_prompts", "load_reward"]
