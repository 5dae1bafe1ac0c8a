"""Live terminal view of an agent run: each comment, each cell, a short view of its output."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.syntax import Syntax
from rich.text import Text

from .loop import AgentEvent


class TerminalView:
    """An `on_event` handler that prints steps as they happen."""

    def __init__(self, console: Console | None = None, output_lines: int = 12):
        self.console = console or Console(stderr=True)
        self.output_lines = output_lines

    def __call__(self, event: AgentEvent) -> None:
        c, d = self.console, event.data
        if event.kind == "turn":
            c.print(Text(f"step {event.turn}: thinking...", style="dim"))
        elif event.kind == "assistant" and d.get("text"):
            c.print(Text(d["text"].strip()[:500], style="italic"))
        elif event.kind == "cell":
            if d.get("comment"):
                c.print(Text(f"# {d['comment'].strip()}", style="bold cyan"))
            c.print(Panel(Syntax(d["code"].rstrip(), "python", theme="ansi_dark", word_wrap=True),
                          border_style="cyan", title=f"cell {event.turn}", title_align="left"))
        elif event.kind == "result":
            result = d["result"]
            lines = (result.text or "(no output)").rstrip().splitlines()
            if len(lines) > self.output_lines:
                keep = self.output_lines // 2
                lines = lines[:keep] + [f"... ({len(lines) - 2 * keep} more lines) ..."] + lines[-keep:]
            style = "" if result.ok else "red"
            c.print(Text("\n".join(lines), style=style))
            c.print(Text(f"[{result.status}, {result.duration_s:.2f} s]", style="dim"))
        elif event.kind == "notice":
            c.print(Text(d["text"], style="yellow"))
        elif event.kind == "answer":
            c.print(Text(f"final answer: {d['answer']}", style="bold green"))
