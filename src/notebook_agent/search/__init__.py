"""Search over notebook states: MCTS with PUCT over kernel forks, candidate answers, voting.

    from notebook_agent.search import SearchConfig, run_search
    result = await run_search(task, model, session, SearchConfig(iterations=20))
    result.answer, result.tree.to_json(), result.trajectory  # chosen path as a Trajectory

See docs/search.md.
"""

from .aggregate import AGGREGATIONS, Candidate, aggregate, normalize_answer
from .config import SearchConfig
from .mcts import SearchEvent, SearchResult, run_search
from .tree import Node, Tree
from .value import ValueScorer, terminal_reward
from .vote import run_vote

__all__ = ["AGGREGATIONS", "Candidate", "Node", "SearchConfig", "SearchEvent", "SearchResult", "Tree",
           "ValueScorer", "aggregate", "normalize_answer", "run_search", "run_vote", "terminal_reward"]
