"""SFT end to end on CPU: real agent traces, a tiny model with a real tokenizer, TRL's trainer."""

from __future__ import annotations

import json

import pytest

from notebook_agent.train.chat_data import DatasetError, load_examples, normalize
from notebook_agent.train.sft import SFTSettings, read_meta, train_sft
from notebook_agent.train.templates import has_generation_markers


def test_trajectories_and_chat_jsonl_load_alike(trace_dir, chat_jsonl, traces):
    a = load_examples(trace_dir)
    b = load_examples(chat_jsonl)
    assert len(a) == len(b) == len(traces)
    assert [x["messages"] for x in a] == [x["messages"] for x in b]
    assert a[0]["tools"] == b[0]["tools"] and {t["function"]["name"] for t in a[0]["tools"]} >= {"execute_code", "final_answer"}
    roles = [m["role"] for m in a[0]["messages"]]
    assert roles[:2] == ["system", "user"] and roles.count("assistant") == 3


def test_datasets_directory_loads(chat_jsonl, tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [json.loads(line) for line in chat_jsonl.read_text().splitlines()]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    got = load_examples(tmp_path / "ds")
    assert len(got) == len(rows)
    # Arrow filled absent keys with None (e.g. tool_calls on user turns): they are gone again
    assert all(v is not None for ex in got for m in ex["messages"] for v in m.values())
    assert got[0]["messages"] == load_examples(chat_jsonl)[0]["messages"]


def test_bad_input_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n{oops\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:2"):
        load_examples(bad)
    with pytest.raises(DatasetError, match="no assistant message"):
        normalize({"messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(DatasetError, match="role"):
        normalize({"messages": [{"role": "robot", "content": "hi"}]})
    with pytest.raises(DatasetError, match="not found"):
        load_examples(tmp_path / "missing.jsonl")


def test_sft_loss_goes_down_and_the_model_loads_in_the_backend(tiny_model_dir, chat_jsonl, tmp_path, traces):
    import torch

    from notebook_agent.models.base import SamplingParams
    from notebook_agent.models.transformers_backend import TransformersModel

    torch.set_num_threads(1)
    out = tmp_path / "sft"
    result = train_sft(SFTSettings(model=str(tiny_model_dir), dataset=str(chat_jsonl), out=str(out), epochs=2,
                                   learning_rate=1e-2, lr_scheduler="constant", warmup=0.0, batch_size=2, max_length=2048,
                                   logging_steps=1, neftune_alpha=7.0))
    assert result.family == "smollm2" and result.codec == "react"
    assert result.examples == len(traces) and 0 < result.trained_tokens < result.train_tokens
    assert result.truncated_examples == 0 and result.cut_trained_tokens == 0
    losses = result.losses
    assert len(losses) == 8 and all(x > 0 for x in losses)
    assert sum(losses[-2:]) / 2 < 0.75 * sum(losses[:2]) / 2, losses  # learned the traces (10.8 -> about 5.5)

    meta = read_meta(out)
    assert meta["codec"] == "react" and meta["family"] == "smollm2" and meta["settings"]["neftune_alpha"] == 7.0
    saved_template = json.loads((out / "tokenizer_config.json").read_text()).get("chat_template") or \
        (out / "chat_template.jinja").read_text()
    assert not has_generation_markers(saved_template)

    # the saved directory loads in the transformers backend and renders what training saw;
    # `load_model(dir)` (what --model DIR does) picks the codec it was trained with
    from notebook_agent.models.resolve import load_model

    assert load_model(str(out), device="cpu").codec.name == "react"
    model = TransformersModel(out, device="cpu", codec=meta["codec"])
    t = traces[0]
    prompt = model.render_prompt(t.messages[:2], t.tools)
    assert "Thought:" in prompt and prompt.endswith("<|im_start|>assistant\n")
    from notebook_agent.train.encode import codec_for, render_text
    from notebook_agent.train.templates import load_template

    tpl = load_template("smollm2")
    trained_text = render_text(model.tokenizer, tpl, codec_for("react", tpl), t.messages, t.tools)
    assert trained_text.startswith(prompt)
    out_c = model.complete_sync(t.messages[:2], t.tools, SamplingParams(max_tokens=8, temperature=0.0))
    assert out_c[0].usage.completion_tokens > 0


def test_settings_are_checked():
    with pytest.raises(ValueError):
        SFTSettings(model="m", dataset="d", out="o", learning_rate=0)
    assert SFTSettings(model="m", dataset="d", out="o", neftune_alpha=0).neftune_alpha is None


def test_cli_needs_no_train_extra_until_a_command_runs(monkeypatch, tmp_path):
    import subprocess
    import sys

    from typer.testing import CliRunner

    from notebook_agent.cli import app

    code = ("import sys, notebook_agent.cli; "
            "print([m for m in ('torch', 'trl', 'peft', 'datasets', 'transformers') if m in sys.modules])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    monkeypatch.setitem(sys.modules, "trl", None)  # as if the train extra were not installed
    r = CliRunner().invoke(app, ["train", "sft", "--model", "m", "--dataset", "d", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "pip install" in r.output and "trl" in r.output


def test_mixed_sources_keep_each_sources_own_draw(chat_jsonl, tmp_path):
    from notebook_agent.train.sft import select_examples

    rows = [json.loads(line) for line in chat_jsonl.read_text().splitlines()]
    many = tmp_path / "many.jsonl"  # a bigger source, so that the cap draws from it
    tagged = [{**r, "messages": [*r["messages"][:1], {"role": "user", "content": f"q{i}"}, *r["messages"][2:]]}
              for i, r in enumerate(rows * 4)]
    many.write_text("".join(json.dumps(r) + "\n" for r in tagged))
    cap = len(rows) + 1
    alone = select_examples(str(many), cap, seed=3)
    mixed = select_examples([str(many), str(chat_jsonl)], cap, seed=3)
    assert len(alone) == cap and len(mixed) == cap + len(rows)  # each source capped on its own
    assert mixed[:cap] == alone                                   # the same draw whether mixed or not
    assert mixed[cap:] == load_examples(chat_jsonl)               # a small source comes whole
    assert select_examples(str(many), cap, seed=4) != alone       # the seed decides the draw
    with pytest.raises(DatasetError, match="not found"):
        select_examples([str(many), str(tmp_path / "gone.jsonl")], None, seed=0)


def test_truncation_is_counted_where_the_loss_loses_it():
    from notebook_agent.train.sft import truncation_stats

    short = {"input_ids": [1] * 4, "assistant_masks": [0, 0, 1, 1]}
    long = {"input_ids": [1] * 10, "assistant_masks": [0, 0, 0, 1, 1, 0, 0, 0, 1, 1]}  # the answer at the end
    start = truncation_stats([short, long], 6, "keep_start")
    assert start == {"train_tokens": 10, "trained_tokens": 4, "truncated_examples": 1, "cut_trained_tokens": 2}
    end = truncation_stats([short, long], 6, "keep_end")
    assert end["trained_tokens"] == 5 and end["cut_trained_tokens"] == 1 and end["truncated_examples"] == 1
    assert truncation_stats([short, long], 10, "keep_start")["truncated_examples"] == 0


def test_progress_shows_no_loss_until_one_is_logged(capsys):
    """A run shorter than `logging_steps` has no logged loss: the bar says so instead of `nan`."""
    from types import SimpleNamespace

    from notebook_agent.train.sft import progress_callback

    bar = progress_callback()
    state = SimpleNamespace(max_steps=3, global_step=0, num_input_tokens_seen=0, log_history=[])
    bar.on_train_begin(None, state, None)
    state.global_step, state.num_input_tokens_seen = 1, 100
    bar.on_step_end(None, state, None)
    state.global_step, state.log_history = 2, [{"loss": 1.25, "step": 2}]
    bar.on_step_end(None, state, None)
    bar.on_train_end(None, state, None)
    err = capsys.readouterr().err
    assert "sft step 1/3: loss -," in err and "nan" not in err
    assert "sft step 2/3: loss 1.250," in err
