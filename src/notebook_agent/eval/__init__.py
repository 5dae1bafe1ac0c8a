"""Evaluation: parallel, resumable benchmark runs (`run_eval`) and reports comparing runs.

The command line is `notebook-agent eval` (eval/cli.py); see docs/eval.md.
"""

from .report import make_report
from .runner import EvalSummary, RunLocked, SettingsMismatch, run_eval

__all__ = ["EvalSummary", "RunLocked", "SettingsMismatch", "make_report", "run_eval"]
