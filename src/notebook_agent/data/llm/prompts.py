"""Prompts of the LLM steps, and the notebook as the model reads it (cells numbered, outputs
cut to a budget)."""

from __future__ import annotations

from typing import Any

from ..notebook import cell_output_text, source

SYSTEM = "You are a careful reviewer of data-analysis Jupyter notebooks. Follow the output format exactly."


def render_notebook(nb: dict[str, Any], max_chars: int = 6000, max_output_chars: int = 400) -> str:
    """Cells as `[cell N] (code|markdown)` blocks with outputs; long outputs keep head and tail."""
    parts = []
    for i, cell in enumerate(nb["cells"]):
        src = source(cell).strip()
        if not src:
            continue
        parts.append(f"[cell {i}] {cell.get('cell_type')}\n{src}")
        if cell.get("cell_type") == "code":
            out = cell_output_text(cell).strip()
            if len(out) > max_output_chars:
                half = max_output_chars // 2
                out = out[:half] + "\n...\n" + out[-half:]
            if out:
                parts.append(f"[output of cell {i}]\n{out}")
    text = "\n\n".join(parts)
    if len(text) > max_chars:
        text = text[: max_chars // 2] + "\n\n[... notebook shortened ...]\n\n" + text[-max_chars // 2:]
    return text


def messages(user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def edu_prompt(notebook: str) -> list[dict[str, str]]:
    return messages(
        "Rate how useful this notebook is for teaching data analysis, from 1 (useless: boilerplate, "
        "no real analysis) to 5 (excellent: clear steps on real data, meaningful results).\n\n"
        f"{notebook}\n\n"
        "Answer with two lines exactly:\nScore: <1-5>\nJustification: <one sentence>")


def relevance_prompt(notebook: str) -> list[dict[str, str]]:
    return messages(
        "Is this notebook a data analysis on real data (loading a dataset and computing statistics, "
        "aggregates or models from it)? Tutorials on synthetic toy data, setup scripts and deep "
        f"learning training code are not.\n\n{notebook}\n\nAnswer with one word: YES or NO.")


def qa_prompt(notebook: str, n: int) -> list[dict[str, str]]:
    return messages(
        f"Write up to {n} questions about the data that this notebook's outputs answer. Each answer "
        "must be a value printed in an output, copied exactly.\n\n"
        f"{notebook}\n\n"
        "Reply with a JSON list only, one object per question, in this shape:\n"
        '[{"question": "<question>", "constraints": "<how to compute it: method, rounding>", '
        '"format": "@<name>[value]", "answer": "@<name>[<value copied from an output>]", '
        '"source_cells": [<index of the cell whose output shows the value>]}]\n'
        "Replace every <...> with this notebook's content: <name> is a short snake_case name that says "
        "what the answer is, and the value must come from an output above, never be made up.")


def verify_prompt(notebook: str, question: str, answer: str) -> list[dict[str, str]]:
    return messages(
        f"{notebook}\n\nQuestion: {question}\nProposed answer: {answer}\n\n"
        "Check the proposed answer against the notebook's outputs only. Reply with one word: "
        "CONFIRMED if the outputs show exactly this answer, REJECTED otherwise.")
