"""PUCT selection, backup, closing, aggregation and the JSON format, on hand-built trees."""

from __future__ import annotations

import json
import math

import pytest

from notebook_agent.search import (
    Candidate,
    Node,
    SearchConfig,
    Tree,
    aggregate,
    normalize_answer,
)
from notebook_agent.search.puct import backup, close_up, puct_score, select_leaf


def small_tree() -> Tree:
    """0 -> 1, 2, 3 ; 1 -> 4, 5"""
    t = Tree(task={"id": "t", "question": "q?", "files": ["/x/sales.csv"]})
    t.add(Node(id=0, parent=None, depth=0))
    for i, prior in ((1, 0.9), (2, 0.5), (3, 0.2)):
        t.add(Node(id=i, parent=0, depth=1, prior=prior))
    for i in (4, 5):
        t.add(Node(id=i, parent=1, depth=2, prior=0.5))
    return t


def test_puct_score_formula():
    n = Node(id=1, parent=0, depth=1, prior=0.4, visits=3, value_sum=1.5)
    assert puct_score(n, 16, 1.25) == pytest.approx(0.5 + 1.25 * 0.4 * 4 / 4)
    assert puct_score(n, 16, 0.0) == pytest.approx(0.5)
    unvisited = Node(id=2, parent=0, depth=1, prior=0.4)
    assert puct_score(unvisited, 9, 1.0) == pytest.approx(0.4 * 3)


def test_backup_adds_a_visit_and_the_value_along_the_path():
    t = small_tree()
    backup(t, t.nodes[4], 1.0)
    backup(t, t.nodes[5], -1.0)
    backup(t, t.nodes[2], 0.5)
    assert (t.nodes[0].visits, t.nodes[0].value_sum) == (3, 0.5)
    assert (t.nodes[1].visits, t.nodes[1].q) == (2, 0.0)
    assert t.nodes[4].q == 1.0 and t.nodes[5].q == -1.0 and t.nodes[2].q == 0.5
    assert t.nodes[3].visits == 0


def test_greedy_selection_follows_q_and_exploration_follows_prior():
    t = small_tree()
    backup(t, t.nodes[4], -1.0)
    backup(t, t.nodes[5], -1.0)
    backup(t, t.nodes[2], 0.2)
    # c = 0: highest Q among root's children is node 2 (0.2 > 0 for unvisited 3 > -1 for 1)
    assert select_leaf(t, 0.0).id == 2
    # c large: node 3 (unvisited, prior 0.2) beats node 2 (visited once, prior 0.5)?
    # 3: 0 + c*0.2*sqrt(3)/1 ; 2: 0.2 + c*0.5*sqrt(3)/2 -> 3 wins once 0.2c*1.732 > 0.2 + 0.433c, i.e. never
    assert select_leaf(t, 10.0).id == 2
    backup(t, t.nodes[2], -1.0)  # node 2 now Q = -0.4
    assert select_leaf(t, 0.0).id == 3
    # descending into node 1 when it is best, then its best child
    t2 = small_tree()
    backup(t2, t2.nodes[4], 0.9)
    assert select_leaf(t2, 0.0).id == 4


def test_ties_go_to_the_higher_prior_then_the_older_node():
    t = small_tree()
    assert select_leaf(t, 0.0).id == 4  # all Q = 0: node 1 (prior 0.9), then its older child
    t.nodes[1].prior, t.nodes[2].prior = 0.5, 0.9
    assert select_leaf(t, 0.0).id == 2  # the higher prior
    t.nodes[1].prior = 0.9
    assert select_leaf(t, 0.0).id == 4  # same prior: the older node


def test_closed_subtrees_are_never_selected_and_closing_propagates():
    t = small_tree()
    backup(t, t.nodes[4], 1.0)
    close_up(t, t.nodes[4])
    assert not t.nodes[1].closed
    assert select_leaf(t, 0.0).id == 5  # node 1 has Q 1.0, its open child is 5
    close_up(t, t.nodes[5])
    assert t.nodes[1].closed  # all its children closed
    assert select_leaf(t, 0.0).id in (2, 3)
    close_up(t, t.nodes[2])
    close_up(t, t.nodes[3])
    assert t.root.closed and select_leaf(t, 0.0) is None


def test_aggregations_disagree_as_they_should():
    cands = [Candidate("@x[1]", 4, 1, -0.5), Candidate("@x[1] ", 5, 2, -0.5), Candidate("@x[2]", 6, 3, 0.9)]
    assert aggregate(cands, "majority").answer == "@x[1]"
    assert aggregate(cands, "best_value").answer == "@x[2]"
    # value-weighted: group 1 weighs 0.25 + 0.25 = 0.5, group 2 weighs 0.95
    assert aggregate(cands, "value_weighted").answer == "@x[2]"
    assert aggregate([], "majority") is None
    # ties: the group found first wins
    assert aggregate([Candidate("b", 2, 2, 0), Candidate("a", 1, 1, 0)], "majority").answer == "a"
    assert normalize_answer("  @A[1]\n ") == "@a[1]"
    # the same items repeated, reordered or in prose are one answer (Qwen wrote all three)
    same = ["@mean_fare[34.65] @mean_fare[34.65] @mean_fare[34.65]", "The mean is @mean_fare[34.65].",
            "@mean_fare[ 34.65 ]"]
    assert {normalize_answer(a) for a in same} == {"@mean_fare[34.65]"}
    assert normalize_answer("@b[2] @a[1]") == normalize_answer("@a[1], @b[2]") != normalize_answer("@a[1]")
    assert aggregate([Candidate("@y[3]", 1, 1, 0), Candidate(same[0], 2, 2, 0), Candidate(same[1], 3, 3, 0)],
                     "majority").answer == same[0]
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(cands, "median")


def test_tree_json_round_trip_and_bad_input(tmp_path):
    t = small_tree()
    t.nodes[4].messages = [{"role": "user", "content": "q?"}]
    t.nodes[4].terminal, t.nodes[4].reason, t.nodes[4].answer = True, "answered", "@x[1]"
    t.nodes[4].state = object()  # live state is never exported
    backup(t, t.nodes[4], 1.0)
    path = t.save(tmp_path / "tree.json")
    data = json.loads(path.read_text())
    assert data["format"] == "notebook-agent-tree" and len(data["nodes"]) == 6
    assert "state" not in data["nodes"][4] and data["nodes"][4]["q"] == 1.0
    back = Tree.load(path)
    assert back.nodes[4].answer == "@x[1]" and back.nodes[4].messages == t.nodes[4].messages
    assert back.nodes[0].children == [1, 2, 3] and back.nodes[1].visits == 1 and back.nodes[4].state is None
    assert [n.id for n in back.path(4)] == [0, 1, 4]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Tree.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="not a notebook-agent tree"):
        Tree.from_dict({"nodes": []})
    d = t.to_dict()
    d["nodes"] = [n for n in d["nodes"] if n["id"] != 1]
    with pytest.raises(ValueError, match="missing parent 1"):
        Tree.from_dict(d)


def test_config_rejects_nonsense():
    with pytest.raises(ValueError):
        SearchConfig(k=0)
    with pytest.raises(ValueError):
        SearchConfig(c_puct=-1)
    with pytest.raises(ValueError):
        SearchConfig(aggregate="median")  # type: ignore[arg-type]
    assert math.isclose(SearchConfig().c_puct, 0.0) and SearchConfig().k == 3 and SearchConfig().iterations == 40


def test_collection_preset():
    cfg = SearchConfig.collection(k=2)
    assert (cfg.c_puct, cfg.iterations, cfg.k) == (1.25, 50, 2)
