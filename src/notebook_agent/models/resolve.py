"""`load_model(spec)`: one string for every way of naming a model (the `--model` argument).

Accepted forms, tried in this order:

- a registry name (`notebook-agent models list`), e.g. `smollm2-135m`: pulled on first use;
- a local `.gguf` file: llama.cpp in-process (`backend="transformers"` to use transformers);
- a local model directory (with `config.json`): transformers;
- an OpenAI-compatible server: `http://host:port/v1#MODEL` (or the `model=` option; with
  neither, the server's first listed model is used);
- `openai:MODEL`: api.openai.com with $OPENAI_API_KEY;
- a Hugging Face repo id, `hf:org/name` or `org/name` (optionally `hf:org/name#file.gguf`):
  downloaded with huggingface_hub where there is network, then loaded as above.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from . import registry
from .base import ChatModel, ModelError

ACCEPTED = (
    "accepted --model forms: a registry name ({names}), a .gguf file, a model directory, "
    "http(s)://host:port/v1#MODEL, openai:MODEL, or a Hugging Face repo id (hf:org/name)"
)


def default_model_name() -> str:
    """The model used when none is given: small enough for a laptop, good enough to answer."""
    return os.environ.get("NOTEBOOK_AGENT_MODEL", "qwen2.5-coder-1.5b")


def _split(spec: str) -> tuple[str, str | None]:
    base, sep, frag = spec.partition("#")
    return base, (frag or None) if sep else None


def load_model(spec: str | None = None, **opts: Any) -> ChatModel:
    """A ChatModel for `spec` (see the module docstring). Options go to the backend
    (codec=, n_ctx=, n_threads=, seed=, timeout=, concurrency=, backend=, cache_dir=, ...).

    `parallel=N`, understood by every backend, is how many calls its callers will make at
    once (eval workers, a server's slots): llama.cpp decodes that many sequences in one batch
    (`n_seq`), an OpenAI-compatible client allows that many requests in flight."""
    if opts.get("parallel") is not None and int(opts["parallel"]) < 1:
        raise ModelError(f"parallel must be >= 1, got {opts['parallel']}")
    spec = (spec or default_model_name()).strip()
    if not spec:
        raise ModelError("empty model spec; " + _accepted())
    known = registry.known_models()
    if spec in known:
        return _from_registry(known[spec], opts)
    if spec.startswith(("http://", "https://")):
        from .openai_compat import OpenAICompatModel

        url, model = _split(spec)
        model = opts.pop("model", None) or model
        return OpenAICompatModel(base_url=url, model=model, **_only(_parallel(opts, "concurrency"), _OPENAI_OPTS))
    if spec.startswith("openai:"):
        from .openai_compat import OpenAICompatModel

        return OpenAICompatModel(base_url=opts.pop("base_url", "https://api.openai.com/v1"), model=spec[len("openai:"):],
                                 **_only(_parallel(opts, "concurrency"), _OPENAI_OPTS))
    path = Path(spec).expanduser()
    if path.exists():
        return _from_path(path, opts)
    if spec.startswith("hf:") or _looks_like_repo(spec):
        return _from_hub(spec.removeprefix("hf:"), opts)
    raise ModelError(f"cannot load model {spec!r}: not a registry name, an existing path, a URL or a repo id; " + _accepted())


def _accepted() -> str:
    return ACCEPTED.format(names=", ".join(registry.known_models()))


_LLAMA_OPTS = {"n_ctx", "n_threads", "codec", "chat_template", "seed", "top_k", "min_p", "n_batch", "name", "constrain",
               "n_seq", "speculate", "flash_attn"}
_HF_OPTS = {"codec", "device", "dtype", "gguf_file", "name", "chat_template", "constrain"}
_OPENAI_OPTS = {"api_key", "api_key_env", "codec", "timeout", "max_retries", "concurrency", "context_window", "name", "backoff",
                "constrain", "guided"}


def _parallel(opts: dict[str, Any], key: str) -> dict[str, Any]:
    """`parallel=N` as this backend's own option `key` (unless that is given)."""
    if opts.get("parallel") is None:
        return opts
    return {key: int(opts["parallel"]), **opts}


def _only(opts: dict[str, Any], allowed: set[str]) -> dict[str, Any]:
    unknown = set(opts) - allowed - {"backend", "cache_dir", "progress", "pip_args", "model", "base_url", "parallel"}
    if unknown:
        raise ModelError(f"unknown model option(s) {', '.join(sorted(unknown))}; this backend takes {', '.join(sorted(allowed))}")
    return {k: v for k, v in opts.items() if k in allowed}


def _from_registry(entry: registry.RegistryModel, opts: dict[str, Any]) -> ChatModel:
    path = registry.pull(entry, cache_dir=opts.get("cache_dir"), progress=opts.get("progress", True),
                         pip_args=opts.get("pip_args", ()))
    opts = {"codec": entry.codec, "name": entry.name, **opts}
    if entry.chat_template and "chat_template" not in opts:
        opts["chat_template"] = entry.chat_template
    return _from_path(path, opts)


# Written by `notebook-agent train sft` next to the weights: the tool-call codec the model was
# trained with (read as plain JSON so that loading needs nothing from the train extra).
TRAIN_META_FILE = "notebook_agent_train.json"


def _trained_codec(path: Path) -> str | None:
    """The codec `train sft` recorded beside the weights (for a trained GGUF: in its folder)."""
    meta = (path if path.is_dir() else path.parent) / TRAIN_META_FILE
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text()).get("codec")
    except (OSError, ValueError):
        return None


def _from_path(path: Path, opts: dict[str, Any]) -> ChatModel:
    if "codec" not in opts and (codec := _trained_codec(path)):
        opts = {**opts, "codec": codec}
    backend = opts.get("backend") or ("transformers" if path.is_dir() else "llamacpp")
    if backend == "llamacpp":
        if path.is_dir():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) != 1:
                raise ModelError(f"{path} is a directory; llama.cpp needs one .gguf file (found {len(ggufs)})")
            path = ggufs[0]
        if path.suffix.lower() != ".gguf":
            raise ModelError(f"{path} is not a .gguf file; " + _accepted())
        from .llamacpp import LlamaCppModel

        return LlamaCppModel(path, **_only(_parallel(opts, "n_seq"), _LLAMA_OPTS))
    if backend == "transformers":
        from .transformers_backend import TransformersModel

        o = _only({k: v for k, v in opts.items() if k not in _LLAMA_OPTS - _HF_OPTS}, _HF_OPTS)
        if path.is_file():  # a GGUF file: transformers dequantizes it
            o.setdefault("gguf_file", path.name)
            path = path.parent
        elif not (path / "config.json").exists() and "gguf_file" not in o:
            raise ModelError(f"{path} has no config.json: not a transformers model directory; " + _accepted())
        return TransformersModel(path, **o)
    raise ModelError(f"unknown backend {backend!r}; use 'llamacpp' or 'transformers'")


def _looks_like_repo(spec: str) -> bool:
    base, _ = _split(spec)
    parts = base.split("/")
    return len(parts) == 2 and all(p and not p.startswith(".") for p in parts) and not spec.startswith(("/", "~"))


def _from_hub(spec: str, opts: dict[str, Any]) -> ChatModel:
    """Download a Hugging Face repo (needs network and `pip install huggingface_hub`)."""
    repo, filename = _split(spec)
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise ModelError(f"{repo!r} looks like a Hugging Face repo id; downloading it needs `pip install huggingface_hub` and network") from e
    patterns = [filename] if filename else None
    try:
        local = Path(snapshot_download(repo_id=repo, allow_patterns=patterns, cache_dir=opts.get("cache_dir")))
    except Exception as e:
        raise ModelError(f"could not download {repo!r} from the Hugging Face Hub (no network?): {e}") from e
    if filename:
        return _from_path(local / filename, opts)
    ggufs = sorted(local.glob("*.gguf"))
    if (local / "config.json").exists() and opts.get("backend") != "llamacpp":
        return _from_path(local, {**opts, "backend": "transformers"})
    if ggufs:  # prefer a 4-bit file, the usual CPU choice
        pick = next((g for g in ggufs if "q4_k_m" in g.name.lower()), ggufs[0])
        return _from_path(pick, opts)
    raise ModelError(f"{repo!r} has neither a config.json nor a .gguf file")
