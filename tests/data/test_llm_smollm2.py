"""The LLM steps and a trace end to end with a real small model (SmolLM2-135M, llama.cpp).

SmolLM2 is weak: these tests assert the bookkeeping (every notebook counted exactly once as
kept or dropped with a reason, parse failures counted, not raised), that real model text went
through, and that a rerun is served from the cache.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import yaml
from datatrove.data import Document

from notebook_agent.data import (
    EduScoreStep,
    QAGenerationStep,
    QAVerifyStep,
    RelevanceStep,
    TraceStep,
    load_config,
    run_pipeline,
)
from notebook_agent.data.llm.steps import grounded
from notebook_agent.data.notebook import notebook_of
from notebook_agent.data.traces import TraceConfig, task_of
from notebook_agent.tasks.scoring import get_scorer

pytestmark = pytest.mark.slow


def _stage_docs(folder: Path) -> list[Document]:
    docs = []
    for p in sorted(folder.glob("*.jsonl.gz")):
        for line in gzip.open(p, "rt"):
            r = json.loads(line)
            docs.append(Document(text=r["text"], id=r["id"], metadata=r["metadata"]))
    return docs


def _accounted(step) -> None:
    c = {k: v.total for k, v in step.stats.stats.items()}
    drops = sum(v for k, v in c.items() if k.startswith("dropped_"))
    assert c["total"] == c.get("forwarded", 0) + c.get("dropped", 0)
    assert c.get("dropped", 0) == drops  # every drop has a reason


@pytest.fixture(scope="module")
def linked(corpus, tmp_path_factory, smollm2_path):
    nbdir, data, _ = corpus
    tmp = tmp_path_factory.mktemp("smol")
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump({
        "output": str(tmp / "out"), "input": {"path": str(nbdir)}, "link": {"data_root": str(data)},
        "llm": {"model": str(smollm2_path), "max_tokens": 48, "max_notebook_chars": 1200, "edu_threshold": 1,
                "concurrency": 1, "model_options": {"n_ctx": 2048, "n_threads": 1}},
        "traces": {"agent": {"max_turns": 2, "max_wall_s": 120, "max_tokens_per_turn": 96,
                             "max_context_tokens": 2048}}}))
    cfg = load_config(path)
    run_pipeline(cfg, steps="read,filter,dedup,link", log=lambda m: None)
    docs = _stage_docs(Path(cfg.output) / "stages" / "link")
    assert len(docs) == 2
    return cfg, docs


def test_each_llm_step_with_smollm2(linked):
    cfg, docs = linked
    cache = str(Path(cfg.output) / "llm_cache")
    edu = EduScoreStep(cfg.llm, cache_dir=cache)
    kept = list(edu(iter(docs)))
    _accounted(edu)
    assert edu.stats["model_calls"].total == 2
    scored = [d for d in docs if "edu_score" in d.metadata]
    for d in docs:  # a real reply: exactly one of a 1-5 score or the raw text of a parse failure
        assert ("edu_score" in d.metadata) != ("edu_raw" in d.metadata)
        assert "edu_raw" in d.metadata or d.metadata["edu_score"] in range(1, 6)
    c = {k: v.total for k, v in edu.stats.stats.items()}
    assert sum(v for k, v in c.items() if k.startswith("score_")) == len(scored)
    assert c.get("dropped_unparsed", 0) == len(docs) - len(scored)
    assert len(kept) == sum(d.metadata["edu_score"] >= cfg.llm.edu_threshold for d in scored)

    rel = RelevanceStep(cfg.llm, cache_dir=cache)
    list(rel(iter(docs[:1])))
    _accounted(rel)

    qa = QAGenerationStep(cfg.llm, cache_dir=cache)
    with_tasks = list(qa(iter(docs[:1])))
    _accounted(qa)
    c = {k: v.total for k, v in qa.stats.stats.items()}
    # the one notebook either yields grounded questions or is dropped saying why
    assert len(with_tasks) + c.get("dropped_no_questions", 0) == 1
    assert c.get("questions", 0) == sum(len(d.metadata["tasks"]) for d in with_tasks)
    for d in with_tasks:
        assert d.metadata["tasks"]
        for t in d.metadata["tasks"]:
            assert t["question"] and t["answer_pairs"] and t["id"].startswith("nb-")
            assert grounded(t["answer_pairs"], notebook_of(d), t["source_cells"])

    ver = QAVerifyStep(cfg.llm, cache_dir=cache)
    planted = [Document(text=docs[0].text, id="planted", metadata={**docs[0].metadata, "tasks": [
        {"id": "p0", "question": "How many rows and columns does df have?", "answer": "@shape[(48, 4)]",
         "answer_pairs": [["shape", "(48, 4)"]], "source_cells": [1]}]})]
    list(ver(iter(planted)))
    _accounted(ver)
    c = {k: v.total for k, v in ver.stats.stats.items()}
    assert c.get("confirmed", 0) + c.get("rejected", 0) + c.get("verify_unparsed", 0) == 1

    # the cache: the same calls again cost nothing
    again = EduScoreStep(cfg.llm, cache_dir=cache)
    list(again(iter(_clean(docs))))
    assert again.stats["cache_hits"].total == 2 and again.stats["model_calls"].total == 0


def _clean(docs):
    return [Document(text=d.text, id=d.id, metadata={k: v for k, v in d.metadata.items()
                                                     if k not in ("edu_score", "edu_raw", "edu_justification")})
            for d in docs]


def test_pipeline_completes_with_smollm2_and_a_real_trace(linked):
    cfg, docs = linked
    stats = run_pipeline(cfg, steps="score,qa,traces,export", log=lambda m: None)
    for step in ("score", "qa", "traces", "export"):
        assert step in stats
    # a real agent run on a planted task, scored, kept whatever the model answered
    doc = Document(text=docs[0].text, id=docs[0].id, metadata={**docs[0].metadata, "tasks": [
        {"id": "t0", "question": "How many rows does sales.csv have?", "format": "@rows[value]",
         "answer": "@rows[48]", "answer_pairs": [["rows", "48"]]}]})
    step = TraceStep(TraceConfig(model=cfg.llm.model, model_options=cfg.llm.model_options, agent=cfg.traces.agent))
    out = list(step(iter([doc])))
    c = {k: v.total for k, v in step.stats.stats.items()}
    # a real agent run in a real kernel: traced (not crashed), kept whatever it answered
    assert c.get("traced") == 1 and "trace_errors" not in c, c
    assert c.get("correct", 0) + c.get("incorrect", 0) == 1 and len(out) == 1
    trace = out[0].metadata["tasks"][0]["trace"]
    traj = trace["trajectory"]
    assert trace["executor_type"] == "jupyter" and traj["completion_tokens"] > 0
    assert traj["status"] not in ("model_error", "kernel_error"), traj["status_detail"]
    assert trace["predicted"] == traj["answer"] and trace["isolation"] == traj["isolation"]
    task = out[0].metadata["tasks"][0]
    assert trace["correct"] == get_scorer("dabench").score(task_of(out[0], task), traj["answer"]).correct
    assert trace["correct"] == (c.get("correct", 0) == 1)
