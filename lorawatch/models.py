"""Model loading: a base LLM from a local directory, a GGUF file or the local hub cache, and
its LoRA adapters from the registry (hashes re-checked), on CUDA in bf16 or the CPU in fp32.

Nothing is downloaded: ``local_files_only`` everywhere. torch, transformers and peft are
imported here, not at start-up.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorawatch.errors import DependencyError, InputError


@dataclass
class DeviceChoice:
    """Where and in which precision the models run."""

    device: Any  # torch.device
    dtype: Any  # torch.dtype

    @property
    def label(self) -> str:
        """For example ``cuda:0/bfloat16``."""
        return f"{self.device}/{str(self.dtype).removeprefix('torch.')}"


def cuda_likely(preference: str = "auto") -> bool:
    """Whether ``pick_device(preference)`` will likely pick CUDA, known without importing torch
    (which takes seconds): an NVIDIA driver is loaded and CUDA_VISIBLE_DEVICES hides nothing.
    For work worth starting early (the PII worker processes); a wrong guess costs time, not
    correctness."""
    if preference == "cpu":
        return False
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


def pick_device(preference: str = "auto") -> DeviceChoice:
    """``auto``: CUDA in bf16 when available, else the CPU in fp32."""
    # Deferred: torch and transformers take seconds to import; only model work needs them.
    import torch

    if preference not in {"auto", "cpu", "cuda"}:
        raise InputError(f"device {preference!r} is not one of auto, cpu, cuda", fix="pass --device auto|cpu|cuda")
    if preference == "cuda" and not torch.cuda.is_available():
        raise DependencyError(
            "--device cuda was asked for, but torch sees no CUDA device",
            fix="run on a GPU machine with a CUDA build of torch, or use --device cpu",
        )
    if preference in {"auto", "cuda"} and torch.cuda.is_available():
        return DeviceChoice(torch.device("cuda", torch.cuda.current_device()), torch.bfloat16)
    return DeviceChoice(torch.device("cpu"), torch.float32)


def preload_libraries(kernels: bool = False) -> threading.Thread:
    """Import torch on a thread while the caller does other work (a canary run opens its
    database and checks its files first): the import takes seconds that the run would
    otherwise wait for. A later import of it in the caller waits for this one. transformers is
    not imported here: a run whose base is built from its files never needs it, and the canary
    worker imports it itself where it does (``lorawatch.monitors.canary_worker``). The caller
    must not import torch's own dependencies meanwhile (two threads importing into each
    other's modules can deadlock).

    ``kernels`` (the run will likely use a GPU, ``cuda_likely``): then Triton too, and the hash
    of its installation that the first kernel launch would otherwise compute in the first
    batch (it reads all of libtriton.so: 0.3 s on the H200's host, 1 s on 2 CPU cores), while
    the run loads its model."""

    def load() -> None:
        # Deferred: this is the point: the import runs on this thread, beside the caller's work.
        import torch  # noqa: F401

        if kernels:
            hash_triton_installation()

    thread = threading.Thread(target=load, name="preload-libraries", daemon=True)
    thread.start()
    return thread


def hash_triton_installation() -> bool:
    """Compute (and keep, in Triton's own cache) the hash of Triton's installation that keys its
    compiled kernels; False where Triton or the function is missing (it moved from
    ``triton.compiler.compiler`` to ``triton.runtime.cache``) or fails. Only time is at stake:
    the first kernel launch computes it otherwise, and reports any failure itself, in the run's
    own thread, where it belongs (here it would only print a thread's traceback)."""
    for module in ("triton.runtime.cache", "triton.compiler.compiler"):
        try:
            key = getattr(importlib.import_module(module), "triton_key", None)
            if callable(key):
                key()
                return True
        except ImportError:
            continue
        except Exception:  # a broken Triton install, an unreadable file: the launch will say so
            return False
    return False


def use_kernel_caches(root: Path | None) -> None:
    """Keep the kernels Triton and Inductor compile under ``root`` (``$LORAWATCH_HOME/cache``),
    so a run compiles them once per machine, not once per container or reboot; variables the
    user set win. A root that cannot be created leaves the libraries' own defaults."""
    if root is None:
        return
    try:
        for name, sub in (("TRITON_CACHE_DIR", "triton"), ("TORCHINDUCTOR_CACHE_DIR", "inductor")):
            if not os.environ.get(name):
                (Path(root) / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
                os.environ[name] = str(Path(root) / sub)
    except OSError:
        return


def resolve_base_source(path: str | None, hub_id: str | None) -> tuple[str, dict[str, Any]]:
    """What to pass to ``from_pretrained`` for a base: a directory, a GGUF file, or a cached hub id."""
    if path:
        p = Path(path)
        if p.is_file() and p.suffix == ".gguf":
            return str(p.parent), {"gguf_file": p.name}
        if p.is_dir():
            return str(p), {}
        raise InputError("base model path does not exist", where=str(p), fix="re-register the base with a valid --path")
    if hub_id:
        return hub_id, {}
    raise InputError("base model has neither a path nor a hub id", fix="re-register the base with --path")


def quiet_transformers() -> None:
    """Keep transformers' own progress bars and advisory warnings off our output."""

    # Deferred: torch and transformers take seconds to import; only model work needs them.
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    # peft asks transformers a deprecated question on every adapter it wraps; not ours to fix
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def load_tokenizer(source: str, extra: dict[str, Any]):
    """The tokenizer of a base, with a pad token (left padding, for batched generation)."""
    # Deferred: torch and transformers take seconds to import; only model work needs them.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, **extra)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_base(path: str | None, hub_id: str | None, choice: DeviceChoice):
    """Load a base causal LM and its tokenizer onto the chosen device, in eval mode."""
    # Deferred: torch and transformers take seconds to import; only model work needs them.
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    source, extra = resolve_base_source(path, hub_id)
    placement = {}
    if choice.device.type != "cpu" and "gguf_file" not in extra and _loads_onto_device():
        # the weights go from the file straight to the device, not through a copy in host memory
        placement["device_map"] = {"": choice.device}
    try:
        tokenizer = load_tokenizer(source, extra)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=choice.dtype, local_files_only=True, **extra, **placement
        )
    except OSError as exc:
        raise InputError(
            f"cannot load the base model: {str(exc).splitlines()[0]}",
            where=source,
            fix="check the registered path; nothing is downloaded",
        ) from None
    model.to(choice.device).eval()
    return model, tokenizer


def direct_unsupported(path: str | None) -> str | None:
    """Why the base at ``path`` cannot be built without transformers (``load_base_direct``), or None."""
    if not path:
        return "a hub id (transformers reads its cache)"
    folder = Path(path)
    if not folder.is_dir():
        return "not a model folder (a GGUF file, say)"
    # Deferred: torch and safetensors take seconds to import; only model work needs them.
    from lorawatch import llama_file, tokenizer_file

    return tokenizer_file.unsupported(folder) or llama_file.unsupported(folder)


def load_base_direct(path: str, choice: DeviceChoice):
    """The base and its tokenizer built without transformers: a Llama-family model from its
    folder's config and safetensors (``lorawatch.llama_file``), its tokenizer with ``tokenizers``
    (``lorawatch.tokenizer_file``). Only the canary's grouped decoder runs such a model; check
    ``direct_unsupported`` first."""
    # Deferred: torch and safetensors take seconds to import; only model work needs them.
    from lorawatch import llama_file
    from lorawatch.tokenizer_file import FileTokenizer

    folder = Path(path)
    try:
        tokenizer = FileTokenizer(folder)
        model = llama_file.load(folder, choice.device, choice.dtype)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"cannot load the base model: {str(exc).splitlines()[0]}",
            where=path,
            fix="check the registered path and its files",
        ) from None
    return model, tokenizer


def _loads_onto_device() -> bool:
    """Whether ``from_pretrained`` takes a one-device ``device_map`` (transformers 5 does by
    itself; older versions need accelerate)."""
    # Deferred: torch and transformers take seconds to import; only model work needs them.
    import transformers
    from transformers.utils import is_accelerate_available

    return int(transformers.__version__.split(".")[0]) >= 5 or bool(is_accelerate_available())


def attach_adapters(model, adapters: dict[str, Path]):
    """Wrap ``model`` in a PeftModel holding every adapter under its given name."""
    # Deferred: torch and transformers take seconds to import; only model work needs them.
    from peft import PeftModel

    names = list(adapters)
    if not names:
        raise InputError("no adapters to attach", fix="register adapters first")
    peft_model = PeftModel.from_pretrained(model, str(adapters[names[0]]), adapter_name=names[0], is_trainable=False)
    for name in names[1:]:
        peft_model.load_adapter(str(adapters[name]), adapter_name=name, is_trainable=False)
    peft_model.eval()
    return peft_model


def chat_prompt(tokenizer, messages: list[dict[str, str]]) -> str:
    """The prompt text: the tokenizer's chat template when it has one, else the plain turns."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nassistant:"
