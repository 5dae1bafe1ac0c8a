"""A branching scripted model for search tests: bookkeeping only (the real-model test is
test_e2e_smollm2.py)."""

from __future__ import annotations

from collections.abc import Callable

from notebook_agent.models.base import (
    ChatModel,
    Completion,
    Message,
    SamplingParams,
    ToolCall,
    ToolSpec,
    Usage,
)

Policy = Callable[[list[Message], int], Completion]


def step(name: str, logprob: float | None = None, **arguments: object) -> Completion:
    """One tool call; `logprob` sets every token's log-probability (so the prior is exp(logprob))."""
    return Completion(raw_text="", tool_calls=[ToolCall(name, dict(arguments))], usage=Usage(10, 4),
                      token_logprobs=None if logprob is None else [logprob] * 4)


def depth(messages: list[Message]) -> int:
    """How many assistant replies the conversation already holds."""
    return sum(m["role"] == "assistant" for m in messages)


class BranchingModel(ChatModel):
    """Calls `policy(messages, i)` for each of the n samples i of a request."""

    def __init__(self, policy: Policy, name: str = "branching"):
        self.policy, self.name = policy, name
        self.requests: list[tuple[int, int]] = []  # (depth, n) per call

    async def _complete(self, messages: list[Message], tools: list[ToolSpec] | None,
                        params: SamplingParams) -> list[Completion]:
        self.requests.append((depth(messages), params.n))
        return [self.policy(messages, i) for i in range(params.n)]
