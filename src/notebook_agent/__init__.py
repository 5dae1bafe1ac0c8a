"""notebook-agent: data-analysis agents that work in real Jupyter notebooks."""

__version__ = "0.1.0"
