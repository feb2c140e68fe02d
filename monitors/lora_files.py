"""LoRA adapters read straight from their files, for the grouped decoder.

A canary run used to wrap the base in a PeftModel (``lorawatch.models.attach_adapters``) only for
``lorawatch.monitors.fast_decode`` to read each layer's LoRA factors back out of PEFT's modules:
PEFT's import, module injection and per-adapter loading cost seconds (2.6 s for 8 rank-16 adapters
on a 1B Llama) and, on the models the grouped decoder runs, buy nothing. Here the factors come from
``adapter_config.json`` and ``adapter_model.safetensors`` as PEFT (0.21) would load them: the same
modules (``target_modules``, ``exclude_modules``, ``layers_to_transform``), ranks and scalings
(``rank_pattern``, ``alpha_pattern``, ``use_rslora``), and dtypes. PEFT upcasts bf16 and fp16
adapters to fp32 whatever the base's dtype (``autocast_adapter_dtype``) and copies the file's
values into them, so ``read_adapter``'s default float32 gives the very tensors PEFT holds, and the
decoder's stacked factors are bit-identical either way.

Only what is modelled here exactly takes this path: ``unsupported`` names anything else (DoRA,
biases, whole modules saved with the adapter, LoRA outside the decoder layers' projections, any
setting not at PEFT's default that this module does not read, settings it does not know), and
those adapters go through PEFT as before. Missing or unreadable files are an ``AdapterFileError``
either way: PEFT could not load them either.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from lorawatch.errors import InputError
from lorawatch.monitors.fast_decode import PROJECTIONS, LoraFactors, decoder_projections, supported

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLED_WEIGHTS_FILE = "adapter_model.bin"  # the older format, which PEFT still reads
# PeftModel.save_pretrained's key for a LoRA factor: its prefix, the module's path in the base, the factor
_KEY = re.compile(r"base_model\.model\.(?P<path>.+)\.lora_(?P<factor>[AB])\.weight")
FIX = "save the adapter with PEFT's save_pretrained (adapter_config.json and adapter_model.safetensors)"

# LoraConfig's settings that this module reads, at PEFT's defaults (a file may leave them out).
READ = {
    "r": 8,
    "lora_alpha": 8,
    "use_rslora": False,
    "rank_pattern": {},
    "alpha_pattern": {},
    "target_modules": None,
    "exclude_modules": None,
    "layers_to_transform": None,
    "layers_pattern": None,
    "task_type": None,
    "init_lora_weights": True,
}
# Settings kept for the record or used in training only: a loaded adapter in eval mode ignores them.
INERT = {"auto_mapping", "peft_version", "base_model_name_or_path", "revision", "inference_mode", "lora_dropout"}
# Every other setting, with its default and what another value means: PEFT loads or runs such an
# adapter differently from plain LoRA on the projections, so it goes through PEFT.
FIXED: dict[str, tuple[object, str]] = {
    "use_dora": (False, "DoRA"),
    "modules_to_save": (None, "whole modules saved with the adapter replace the base's"),
    "bias": ("none", "PEFT trains biases of the base layers"),
    "lora_bias": (False, "LoRA B with a bias"),
    "fan_in_fan_out": (False, "transposed (Conv1D) weights"),
    "target_parameters": (None, "LoRA on parameters rather than modules"),
    "layer_replication": (None, "replicated layers"),
    "trainable_token_indices": (None, "trained token embeddings"),
    "ensure_weight_tying": (False, "adapters tied to the embeddings"),
    "alora_invocation_tokens": (None, "activated LoRA"),
    "megatron_config": (None, "Megatron layers"),
    "megatron_core": ("megatron.core", "Megatron layers"),
    "use_qalora": (False, "QA-LoRA"),
    "qalora_group_size": (16, "QA-LoRA"),
    "loftq_config": ({}, "LoftQ"),
    "eva_config": (None, "EVA initialisation"),
    "corda_config": (None, "CorDA initialisation"),
    "lora_ga_config": (None, "LoRA-GA initialisation"),
    "velora_config": (None, "VeLoRA"),
    "monteclora_config": (None, "MonteCLoRA"),
    "use_bdlora": (None, "block-diagonal LoRA"),
    "arrow_config": (None, "Arrow routing"),
    "kasa_config": (None, "KaSA"),
}
# Every setting this module knows: any other (a newer PEFT's) sends the adapter through PEFT.
KNOWN = {"peft_type", *READ, *INERT, *FIXED}
# Initialisations that only set A and B, which the file then overwrites; the others (PiSSA, OLoRA,
# LoftQ, EVA, CorDA ...) change the base weights or read data when PEFT loads the adapter.
PLAIN_INITS = (True, False, "gaussian")
# PEFT condenses a target list this long to suffixes before matching, which changes how
# layers_to_transform applies to full module names in it (peft.tuners.tuners_utils.inject_adapter)
CONDENSED_TARGETS = 20


class AdapterFileError(InputError):
    """An adapter directory whose files are missing or unreadable: neither path can load it."""


def unsupported(directory: Path, model) -> str | None:
    """Why the adapter in ``directory`` cannot be read from its files for ``model`` (the plain
    transformers model the grouped decoder runs), or None when ``read_adapter`` gives exactly
    what PEFT would hold. Reads the config and the weights file's header, not the weights.

    Raises AdapterFileError when the files are missing or unreadable.
    """
    directory = Path(directory)
    config = _config(directory)
    why = _config_reason(config) or _pickled(directory) or supported(model, [])
    if why:
        return why
    projections = {path: module for layer in decoder_projections(model) for path, module in layer.values()}
    targeted = _targeted(config, [name for name, _ in model.named_modules() if name])
    if not targeted:
        return f"target_modules {config['target_modules']!r} match no module of the model"
    outside = sorted(targeted - set(projections))
    if outside:
        return (
            f"LoRA on {outside[0]}: only the decoder layers' projections ({', '.join(PROJECTIONS)}) are read from files"
        )
    path = _weights(directory)
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118 (not iterable)
    except (SafetensorError, OSError) as exc:
        raise _unreadable(path, exc) from exc
    pairs, why = _pairs(shapes, path)
    if why:
        return why
    if missing := sorted(targeted - set(pairs)):
        return f"{missing[0]} is targeted but has no weights in {WEIGHTS_FILE} (PEFT would keep its initial values)"
    if stray := sorted(set(pairs) - targeted):
        return f"{WEIGHTS_FILE} holds weights for {stray[0]}, which the config does not target (PEFT would ignore them)"
    for module_path, (a_key, b_key) in pairs.items():
        rank = _rank(config, module_path)
        _check_rank(module_path, shapes[a_key], shapes[b_key], rank, path)
        out_features, in_features = projections[module_path].get_parameter("weight").shape
        if shapes[a_key][1] != in_features or shapes[b_key][0] != out_features:
            return f"{module_path}: LoRA A {shapes[a_key]} and B {shapes[b_key]} do not fit its weight ({out_features}, {in_features})"
    return None


def read_adapter(directory: Path, device, dtype: torch.dtype = torch.float32) -> dict[str, LoraFactors]:
    """The adapter's factors and scaling per module path in the base (``model.layers.3.self_attn.q_proj``),
    loaded from the file straight onto ``device`` and held in ``dtype`` (float32: as PEFT holds them).

    Call ``unsupported`` first: this reads the file without the model, so it cannot tell whether
    every module is one the grouped decoder runs (the decoder refuses factors for any other).
    Raises AdapterFileError when the files are missing or unreadable, ValueError when the adapter
    is one ``unsupported`` refuses on its config or weight names.
    """
    directory = Path(directory)
    config = _config(directory)
    why = _config_reason(config) or _pickled(directory)
    if why:
        raise ValueError(f"{directory}: cannot be read from its files: {why}")
    path = _weights(directory)
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise _unreadable(path, exc) from exc
    pairs, why = _pairs({key: tuple(t.shape) for key, t in tensors.items()}, path)
    if why:
        raise ValueError(f"{directory}: cannot be read from its files: {why}")
    factors = {}
    for module_path, (a_key, b_key) in pairs.items():
        a, b = tensors[a_key], tensors[b_key]
        rank = _rank(config, module_path)
        _check_rank(module_path, tuple(a.shape), tuple(b.shape), rank, path)
        if not (a.is_floating_point() and b.is_floating_point()):
            raise AdapterFileError(
                f"{module_path}'s LoRA weights are {a.dtype} and {b.dtype}", where=str(path), fix=FIX
            )
        alpha = _by_pattern(_setting(config, "alpha_pattern"), module_path, _setting(config, "lora_alpha"))
        # peft.tuners.lora.layer.LoraLayer.update_layer
        scaling = alpha / math.sqrt(rank) if _setting(config, "use_rslora") else alpha / rank
        factors[module_path] = LoraFactors(a.to(dtype), b.to(dtype), scaling)
    return factors


# ------------------------------------------------------------ the config


def _config(directory: Path) -> dict:
    """The adapter's config, its settings' types checked: a value PEFT could not load is an error here too."""
    path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise AdapterFileError("no such adapter directory", where=str(directory), fix=FIX)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise AdapterFileError(f"no {CONFIG_FILE}", where=str(directory), fix=FIX) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterFileError(f"unreadable: {exc}", where=str(path), fix=FIX) from exc
    if not isinstance(config, dict):
        raise AdapterFileError("not a JSON object", where=str(path), fix=FIX)
    for key, (valid, expected) in _TYPES.items():
        value = _setting(config, key)
        if not valid(value):
            raise AdapterFileError(f"{key} is {value!r}, not {expected}", where=str(path), fix=FIX)
    targets = _setting(config, "target_modules")
    if isinstance(targets, str) and (
        _setting(config, "layers_to_transform") is not None or config.get("layers_pattern")
    ):
        raise AdapterFileError("layers_to_transform and layers_pattern need target_modules as a list", where=str(path))
    if config.get("layers_pattern") and _setting(config, "layers_to_transform") is None:
        raise AdapterFileError("layers_pattern needs layers_to_transform", where=str(path))
    try:
        for pattern in _patterns(config):
            re.compile(pattern)
    except re.error as exc:
        raise AdapterFileError(f"invalid pattern: {exc}", where=str(path), fix=FIX) from exc
    return config


def _setting(config: dict, key: str):
    return config.get(key, READ[key])


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_names(value) -> bool:
    return (
        value is None or isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    )


_TYPES = {
    "r": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "lora_alpha": (_is_number, "a number"),
    "use_rslora": (lambda v: isinstance(v, bool), "true or false"),
    "rank_pattern": (
        lambda v: isinstance(v, dict) and all(_is_int(x) and x > 0 for x in v.values()),
        "an object of positive integers",
    ),
    "alpha_pattern": (lambda v: isinstance(v, dict) and all(map(_is_number, v.values())), "an object of numbers"),
    "target_modules": (_is_names, "null, a pattern or a list of names"),
    "exclude_modules": (_is_names, "null, a pattern or a list of names"),
    "layers_to_transform": (
        lambda v: v is None or _is_int(v) or (isinstance(v, list) and all(map(_is_int, v))),
        "null, an integer or a list of integers",
    ),
    "layers_pattern": (_is_names, "null, a name or a list of names"),
}


def _patterns(config: dict) -> list[str]:
    """Every regular expression PEFT builds from the config's settings, as it builds them."""
    patterns = [
        p for p in (_setting(config, "target_modules"), _setting(config, "exclude_modules")) if isinstance(p, str)
    ]
    for key in ("rank_pattern", "alpha_pattern"):
        patterns += [rf"(.*\.)?({k})$" for k in _setting(config, key)]
    layers = _setting(config, "layers_pattern")
    patterns += [rf"(?:^|.*?\.){p}\.(?P<idx>\d+)\." for p in ([layers] if isinstance(layers, str) else layers or [])]
    return patterns


def _config_reason(config: dict) -> str | None:
    """Why PEFT would load this config as something other than plain LoRA read as modelled here."""
    unknown = sorted(set(config) - KNOWN)
    if unknown:
        return f"{CONFIG_FILE} has settings this reader does not know: {unknown}"
    if config.get("peft_type") != "LORA":
        return f"PEFT type {config.get('peft_type')!r}, not LORA"
    for key, (default, meaning) in FIXED.items():
        if config.get(key, default) != default:
            return f"{key}={config[key]!r}: {meaning}"
    if _setting(config, "task_type") not in (None, "CAUSAL_LM"):
        return f"task_type={config['task_type']!r}: PEFT wraps models of other tasks in other ways"
    if _setting(config, "init_lora_weights") not in PLAIN_INITS:
        return (
            f"init_lora_weights={config['init_lora_weights']!r}: PEFT initialises it from the base or data on loading"
        )
    targets = _setting(config, "target_modules")
    if targets is None:
        return "no target_modules: PEFT picks them per model type"
    if isinstance(targets, str) and targets.lower() == "all-linear":
        return "target_modules 'all-linear': PEFT expands it from the model"
    if (
        isinstance(targets, list)
        and len(targets) >= CONDENSED_TARGETS
        and _setting(config, "layers_to_transform") is not None
    ):
        return f"{len(targets)} target_modules with layers_to_transform: PEFT condenses the list first"
    return None


def _targeted(config: dict, names: list[str]) -> set[str]:
    """The modules PEFT wraps for this config (peft.tuners.tuners_utils.check_target_module_exists)."""
    targets, exclude = _setting(config, "target_modules"), _setting(config, "exclude_modules")
    layers, layer_names = _setting(config, "layers_to_transform"), _setting(config, "layers_pattern")
    found = set()
    for key in names:
        if exclude and (
            re.fullmatch(exclude, key)
            if isinstance(exclude, str)
            else key in exclude or any(key.endswith(f".{e}") for e in exclude)
        ):
            continue
        if isinstance(targets, str):
            if re.fullmatch(targets, key):
                found.add(key)
            continue
        if key in targets:  # a full name: no layer filter
            found.add(key)
            continue
        if not any(key.endswith(f".{t}") for t in targets):
            continue
        if layers is None or layers == []:
            found.add(key)
            continue
        if not layer_names:  # the first numbered part of the name
            match = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", key)
        else:
            for name in [layer_names] if isinstance(layer_names, str) else layer_names:
                match = re.match(rf"(?:^|.*?\.){name}\.(?P<idx>\d+)\.", key)
                if match:
                    break
        if match and (int(match["idx"]) == layers if isinstance(layers, int) else int(match["idx"]) in layers):
            found.add(key)
    return found


def _by_pattern(patterns: dict, path: str, default):
    """A rank_pattern or alpha_pattern value for the module at ``path`` as PEFT picks it
    (peft.utils.other.get_pattern_key): the first key, in the file's order, that matches the end
    of the path at a dot, else ``default``."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", path):
            return value
    return patterns.get(path, default)


def _rank(config: dict, path: str) -> int:
    return _by_pattern(_setting(config, "rank_pattern"), path, _setting(config, "r"))


# ------------------------------------------------------------ the weights


def _pickled(directory: Path) -> str | None:
    if not (directory / WEIGHTS_FILE).exists() and (directory / PICKLED_WEIGHTS_FILE).is_file():
        return f"weights in {PICKLED_WEIGHTS_FILE} (pickle), not {WEIGHTS_FILE}"
    return None


def _weights(directory: Path) -> Path:
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise AdapterFileError(f"no {WEIGHTS_FILE}", where=str(directory), fix=FIX)
    return path


def _unreadable(path: Path, exc: Exception) -> AdapterFileError:
    return AdapterFileError(f"unreadable safetensors file: {exc}", where=str(path), fix=FIX)


def _pairs(shapes: dict[str, tuple[int, ...]], path: Path) -> tuple[dict[str, tuple[str, str]], str | None]:
    """The A and B keys per module path, or why the file holds more than plain LoRA factors
    (embedding factors, DoRA magnitudes, biases, saved modules ...). One factor without the
    other is an error: PEFT would leave the missing one at its random initial value."""
    found: dict[str, dict[str, str]] = {}
    for key in sorted(shapes):
        match = _KEY.fullmatch(key)
        if match is None:
            return {}, f"{key} in {WEIGHTS_FILE} is not a LoRA A or B weight"
        found.setdefault(match["path"], {})[match["factor"]] = key
    for module_path, keys in found.items():
        if len(keys) != 2:
            have = next(iter(keys))
            raise AdapterFileError(
                f"{module_path} has LoRA {have} but not {'B' if have == 'A' else 'A'}", where=str(path), fix=FIX
            )
        if any(len(shapes[k]) != 2 for k in keys.values()):
            raise AdapterFileError(f"{module_path}'s LoRA weights are not matrices", where=str(path), fix=FIX)
    return {module_path: (keys["A"], keys["B"]) for module_path, keys in found.items()}, None


def _check_rank(module_path: str, a_shape: tuple[int, ...], b_shape: tuple[int, ...], rank: int, path: Path) -> None:
    """A (r, in) and B (out, r) at the rank the config gives the module: PEFT refuses other shapes."""
    if a_shape[0] != rank or b_shape[1] != rank:
        raise AdapterFileError(
            f"{module_path}: LoRA A {a_shape} and B {b_shape} disagree with rank {rank} in {CONFIG_FILE}",
            where=str(path),
            fix=FIX,
        )
