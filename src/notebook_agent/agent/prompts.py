"""What the model is told: the system prompt and the first user message.

The first message carries the question, the task's constraints and answer format when it has
them, and the files (name and size; for tables, the columns and a few rows when
`file_preview` is on).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from ..tasks.task import Task

SYSTEM_TOOLS = """You are a careful data analyst working in a Jupyter notebook.
Solve the user's question by running Python code, one step at a time:
- Call `execute_code` with a short `comment` (what this step does) and the `code` of one cell.
  The kernel keeps variables between cells; the data files are in the current directory.
  pandas and numpy are installed. Print the values you need to see.
- Read each output before the next step. If a cell fails, fix the error.
- Never guess or invent numbers: every number in your answer must come from an output you saw.
- When the outputs answer the question, call `final_answer` with the answer in the requested
  format. Call `final_answer` alone, not together with `execute_code`."""

SYSTEM_REACT = """You are a careful data analyst working in a Jupyter notebook.
Solve the user's question by writing Python code, one step at a time. The data files are in the
current directory; pandas and numpy are installed; variables persist between steps."""

TABULAR_SUFFIXES = {".csv", ".tsv", ".txt"}


@dataclass(frozen=True)
class ScaffoldWords:
    """How the scaffold's reminders name its moves, in that scaffold's own language only (a
    ReAct model is never told about tool calls), and never as text it could copy as code."""

    missing: str   # what the reply lacked
    run: str       # how to run code
    answer: str    # how to give the answer
    answer_alone: str  # the rule that an answer comes alone, after the outputs were read


SCAFFOLD_WORDS = {
    "tools": ScaffoldWords(
        missing="You did not call a tool.",
        run="call execute_code with a short comment and the code to run",
        answer="call final_answer with the answer",
        answer_alone="call final_answer alone, after you have seen the outputs of your code"),
    "react": ScaffoldWords(
        missing="Your reply had no python code block and no formatted answer.",
        run="write a line starting with \"Thought:\", then one python code block",
        answer="write a line starting with \"Formatted answer:\" followed by the answer",
        answer_alone="give the formatted answer without a code block, after you have seen the "
                     "outputs of your code"),
}


def nudge(scaffold: str, *, guessed: bool, answer_format: str | None) -> str:
    """What to tell a model that replied without a step. An answer written before any code ran
    is named as a guess: small models otherwise repeat it unchanged. After code ran, small
    models tend to restate a result in prose and stop: the answer's exact format is named."""
    w = SCAFFOLD_WORDS[scaffold]
    if guessed:
        return (f"You wrote an answer, but no code has run yet, so its values are guesses. First "
                f"{w.run}, to compute them from the files.")
    if answer_format:
        return (f"{w.missing} If the outputs you have seen answer the question, {w.answer}, written "
                f"as: {answer_format}\nOtherwise {w.run}.")
    return (f"{w.missing} To run code, {w.run}; when the outputs you have seen answer the "
            f"question, {w.answer}.")


def repeated_cell(scaffold: str) -> str:
    """The model sent the cell it just ran, unchanged (`AgentConfig.refuse_repeats`)."""
    w = SCAFFOLD_WORDS[scaffold]
    return (f"Not run: this cell is the same as the one you just ran, and its output is above. Use that "
            f"output: if it answers the question, {w.answer}; otherwise {w.run} for the next step, "
            f"different from this one.")


def unusable(scaffold: str, why: str) -> str:
    """The reply could not be decoded."""
    w = SCAFFOLD_WORDS[scaffold]
    return (f"Error: your last message could not be used: {why}\nTo run code, {w.run}; when the "
            f"outputs answer the question, {w.answer}.")


def rejected_with_code(scaffold: str) -> str:
    return (f"Rejected: {SCAFFOLD_WORDS[scaffold].answer_alone}. Your code in this message was "
            "run; read its output first.")


def rejected_before_code(scaffold: str) -> str:
    return ("Rejected: you have not run any code successfully yet. Compute the answer with code "
            f"first ({SCAFFOLD_WORDS[scaffold].run}) and answer only from outputs you have seen.")


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def table_preview(path: Path, rows: int = 3, max_cols: int = 30, max_cell: int = 40) -> str | None:
    """Columns and first rows of a delimited text file, read without pandas' full parse."""
    if path.suffix.lower() not in TABULAR_SUFFIXES:
        return None
    try:
        with path.open(newline="", errors="replace") as f:
            head = f.read(64_000)
        dialect = csv.Sniffer().sniff(head.splitlines()[0] if head else ",", delimiters=",;\t|")
        reader = csv.reader(io.StringIO(head), dialect)
        lines = [row for _, row in zip(range(rows + 1), reader)]
    except (OSError, csv.Error, UnicodeError):
        return None
    if not lines:
        return None

    def clip(cell: str) -> str:
        return cell if len(cell) <= max_cell else cell[: max_cell - 3] + "..."

    columns = lines[0]
    shown = columns[:max_cols]
    more = f" (+{len(columns) - max_cols} more)" if len(columns) > max_cols else ""
    out = [f"  columns ({len(columns)}): " + ", ".join(clip(c) for c in shown) + more]
    for row in lines[1:]:
        out.append("  | " + " | ".join(clip(c) for c in row[:max_cols]))
    return "\n".join(out)


def describe_files(files: list[Path], preview: bool) -> str:
    if not files:
        return "No data files are attached."
    parts = ["Files in the current directory:"]
    for p in files:
        try:
            size = human_size(p.stat().st_size)
        except FileNotFoundError:  # not on this machine (the data pipeline's LLM interpreter): name only
            parts.append(f"- {p.name}")
            continue
        except OSError:
            size = "unreadable"
        parts.append(f"- {p.name} ({size})")
        if preview:
            table = table_preview(p)
            if table:
                parts.append(table)
    return "\n".join(parts)


def first_message(task: Task, preview: bool = True) -> str:
    parts = [f"Question: {task.question.strip()}"]
    if task.constraints:
        parts.append(f"Constraints: {task.constraints.strip()}")
    if task.guidelines:
        parts.append(f"Guidelines: {task.guidelines.strip()}")
    if task.format:
        parts.append(f"Answer format: {task.format.strip()}")
    parts.append(describe_files(task.files, preview))
    return "\n\n".join(parts)
