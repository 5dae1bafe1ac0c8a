"""Fixtures for the training tests: real traces from the agent in a real kernel, real
tokenizers (from the registry's GGUF files), and a tiny random model with SmolLM2's tokenizer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="training needs torch: pip install torch==2.13.0")
pytest.importorskip("trl", reason="training needs the train extra: pip install 'notebook-agent[train]'")
pytest.importorskip("gguf", reason="the real tokenizers are read from GGUF files (pip install gguf)")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# (question, format, code, answer from the printed output): real analyses of examples/sales.csv.
ANALYSES = [
    ("What is the total number of units sold?", "@total_units[value]", "print(df.units.sum())"),
    ("How many orders are there?", "@orders[value]", "print(len(df))"),
    ("What is the mean unit price, rounded to 2 decimals?", "@mean_price[value]", "print(round(df.unit_price.mean(), 2))"),
    ("Which region sold the most units?", "@region[value]", "print(df.groupby('region').units.sum().idxmax())"),
    ("How many distinct products are there?", "@products[value]", "print(df['product'].nunique())"),
    ("What is the largest number of units in one order?", "@max_units[value]", "print(df.units.max())"),
    ("What is the total revenue (units times unit price), rounded to 1 decimal?", "@revenue[value]",
     "print(round((df.units * df.unit_price).sum(), 1))"),
    ("Which product has the highest mean unit price?", "@product[value]",
     "print(df.groupby('product').unit_price.mean().idxmax())"),
]


async def _run_all() -> list:
    from notebook_agent.agent.loop import AgentConfig, run_agent
    from notebook_agent.kernel import make_session
    from notebook_agent.models.scripted import ScriptedModel, call
    from notebook_agent.tasks.task import Task

    files = [EXAMPLES / "sales.csv"]
    session = make_session("local", files=files)
    await session.start()
    out = []
    try:
        for i, (question, fmt, code) in enumerate(ANALYSES):
            name = fmt[1:].split("[")[0]
            task = Task(id=f"sales-{i}", question=question, files=files, format=f"{fmt} where value is the answer.")
            model = ScriptedModel([
                call("execute_code", comment="Load the sales table.",
                     code="import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(df.shape)"),
                call("execute_code", comment=f"Compute it: {question.lower()}", code=code),
                lambda msgs, name=name: call("final_answer", answer=f"@{name}[{msgs[-1]['content'].strip()}]"),
            ])
            out.append(await run_agent(task, model, session, AgentConfig()))
    finally:
        await session.close()
    return out


@pytest.fixture(scope="session")
def traces():
    """Trajectories of the real agent loop in a real kernel (answers from real outputs)."""
    trajs = asyncio.run(_run_all())
    assert all(t.status == "answered" for t in trajs), [t.status_detail for t in trajs]
    return trajs


@pytest.fixture(scope="session")
def trace_dir(traces, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("traces")
    for t in traces:
        t.save(d / f"{t.task_id}.json")
    return d


@pytest.fixture(scope="session")
def chat_jsonl(traces, tmp_path_factory) -> Path:
    """The same traces in the exported chat format: OpenAI messages, tools as a JSON string."""
    p = tmp_path_factory.mktemp("chat") / "train.jsonl"
    p.write_text("".join(json.dumps({"messages": t.messages, "tools": json.dumps(t.tools), "question": t.question}) + "\n"
                         for t in traces))
    return p


def _gguf_tokenizer(name: str):
    from transformers import AutoTokenizer

    from notebook_agent.models import registry

    path = registry.pull(name, progress=False)
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    return _gguf_tokenizer("smollm2-135m")


@pytest.fixture(scope="session")
def qwen_tokenizer():
    return _gguf_tokenizer("qwen2.5-coder-1.5b")


@pytest.fixture(scope="session")
def gemma_tokenizer():
    return _gguf_tokenizer("gemma3-270m")


@pytest.fixture(scope="session")
def tiny_model_dir(smollm2_tokenizer, tmp_path_factory) -> Path:
    """A tiny random Llama model (SmolLM2's architecture family) with SmolLM2's real tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = smollm2_tokenizer
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    d = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d
