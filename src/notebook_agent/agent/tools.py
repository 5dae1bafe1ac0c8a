"""The agent's two tools, as OpenAI function specs (the Jupyter Agent's lean choice)."""

from __future__ import annotations

EXECUTE_CODE = "execute_code"
FINAL_ANSWER = "final_answer"

TOOLS: list[dict] = [
    {
        "type": "function",
        "function": {
            "name": EXECUTE_CODE,
            "description": (
                "Run Python code in the Jupyter notebook's kernel and see its output. "
                "State is kept between calls. The data files are in the current directory."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "comment": {
                        "type": "string",
                        "description": "One or two sentences: what this step does and why.",
                        # bounds the comment in constrained decoding (a small model may not stop)
                        "maxLength": 400,
                    },
                    "code": {"type": "string", "description": "The Python code of the cell."},
                },
                "required": ["comment", "code"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": FINAL_ANSWER,
            "description": "Give the final answer, once the outputs you have seen support it.",
            "parameters": {
                "type": "object",
                "properties": {
                    "answer": {"type": "string", "description": "The answer, in the requested format.",
                               "maxLength": 1000}
                },
                "required": ["answer"],
            },
        },
    },
]
