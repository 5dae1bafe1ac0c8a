"""Does a value model tell good notebook states from bad ones? AUC on held-out states, by pooling.

    python benchmarks/value.py --train-runs runs/teacher-a runs/teacher-b [--train-trees runs/collect/trees] \
        --eval-runs runs/dev60-tools-c runs/dev60-tools-u [--eval-trees runs/collect-heldout/trees] \
        [--model smollm2-135m] [--max-length 128,512]

Training states: every prefix state of the attempts in `--train-runs` (eval runs over
generated training tasks), valued by the attempt's outcome, and the sampled paths of trees
collected on training tasks (`--train-trees`), valued by node Q (train/value_data.py).
Held-out states: the same from `--eval-runs` (other tables, e.g. dabench-dev attempts:
evaluation only), and the answered candidates of trees collected on held-out tables
(`--eval-trees`), valued by the scorer's reward: their AUC (the "candidates" column) is what
a value-guided search needs, picking among answers.

The backbone is frozen; each state goes through it once, and the mean and the final token's
states are kept, so the three poolings (mean, last, mean_last) are compared on the same
forward passes, for each truncation in `--max-length` (the most recent tokens kept).
The head's epochs, and then the one setting reported as the result (truncation, pooling),
are chosen by 5-fold cross-validation over training attempts, never on held-out states;
each head then trains on all training states. Every setting's held-out AUC is printed, the
chosen one marked.

Beside them, the no-training heuristic "the latest output is not an error": a value model
that does not beat it has learned nothing the search does not already see.

Prints a table; the last line is one JSON object (the chosen setting's AUC with its interval,
by depth, and its paired difference from the heuristic; every setting's AUC; counts, seconds).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import replace
from pathlib import Path

POOLINGS = ("mean", "last", "mean_last")


def folds_by_task(examples: list, k: int, seed: int) -> list[list[int]]:
    """Indices of the examples in k folds (at most one per attempt); all states of one attempt
    in one fold."""
    tasks = sorted({e.tree for e in examples})
    k = min(k, len(tasks))
    random.Random(seed).shuffle(tasks)
    fold_of = {t: i % k for i, t in enumerate(tasks)}
    return [[i for i, e in enumerate(examples) if fold_of[e.tree] == f] for f in range(k)]


def roc(scores: list[float], positive: list[bool]) -> tuple[list[float], list[float]]:
    """False and true positive rates at every threshold, from the highest score down."""
    p, n = sum(positive), len(positive) - sum(positive)
    fpr, tpr, tp, fp = [0.0], [0.0], 0, 0
    pairs = sorted(zip(scores, positive), key=lambda x: -x[0])
    for i, (sc, y) in enumerate(pairs):
        tp, fp = tp + y, fp + (not y)
        if i + 1 == len(pairs) or pairs[i + 1][0] != sc:
            fpr.append(fp / max(1, n))
            tpr.append(tp / max(1, p))
    return fpr, tpr


def plot_roc(path: Path, curves: dict[str, list[float]], positive: list[bool], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from notebook_agent.train.value_eval import auc

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, scores in curves.items():
        ax.plot(*roc(scores, positive), label=f"{name}: AUC {auc(scores, positive):.3f}")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-runs", nargs="*", default=[])
    ap.add_argument("--train-trees", nargs="*", default=[], help="trees collected on training tasks")
    ap.add_argument("--eval-runs", nargs="*", default=[])
    ap.add_argument("--eval-trees", nargs="*", default=[], help="trees collected on held-out tasks: their candidates")
    ap.add_argument("--model", default="smollm2-135m", help="the backbone (registry name, GGUF or directory)")
    ap.add_argument("--max-length", default="128,512", help="most recent tokens of a state kept (candidates, "
                    "chosen by CV)")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--epochs", default="5,20,50", help="candidates for the head's epochs (chosen by CV)")
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the full report (JSON, every held-out state's scores) here")
    args = ap.parse_args()
    if not (args.train_runs or args.train_trees) or not (args.eval_runs or args.eval_trees):
        ap.error("give training states (--train-runs/--train-trees) and held-out ones (--eval-runs/--eval-trees)")

    import torch
    from rich.console import Console
    from rich.table import Table

    from notebook_agent.models.value_model import ValueModel
    from notebook_agent.train.value_data import load_run_examples, load_tree_candidates, load_value_examples
    from notebook_agent.train.value_eval import auc, evaluate_scores, last_output_ok, paired_auc_difference
    from notebook_agent.train.value_train import ValueSettings, build_value_model, fit

    torch.manual_seed(args.seed)
    console = Console(stderr=True)
    train = load_run_examples(args.train_runs) if args.train_runs else []
    for t in args.train_trees:
        train += load_value_examples(t, seed=args.seed)
    held = load_run_examples(args.eval_runs) if args.eval_runs else []
    candidates = [e for t in args.eval_trees for e in load_tree_candidates(t)]
    cand_idx = list(range(len(held), len(held) + len(candidates)))
    held += candidates

    def task_of(e) -> str:  # RUN#task for attempts, task.json for trees
        return e.tree.split("#")[-1].removesuffix(".json")

    overlap = {task_of(e) for e in train} & {task_of(e) for e in held}
    if overlap:
        console.print(f"[yellow]warning: {len(overlap)} task id(s) in both sets: {sorted(overlap)[:5]}")
    lengths = [int(x) for x in args.max_length.split(",")]
    s = ValueSettings(model=args.model, out="", runs=args.train_runs, max_length=lengths[0],
                      pooling="mean_last", freeze_backbone=True, bf16=args.bf16, head_learning_rate=args.head_lr,
                      batch_size=args.batch_size, seed=args.seed)
    base = build_value_model(s)
    feats, features_s, hidden = {}, 0.0, 0
    for length in lengths:  # one forward pass per state and length; all poolings read it
        base.config.max_length = length
        t0 = time.time()
        feats[length] = (base.features([e.messages for e in train], args.batch_size),
                         base.features([e.messages for e in held], args.batch_size))
        elapsed = time.time() - t0
        features_s += elapsed
        tokens = sum(len(base.token_ids(e.messages)) for e in train + held)  # counted after the clock stops
        console.print(f"features, last {length} tokens: {len(train)} training and {len(held)} held-out states in "
                      f"{elapsed:.0f} s ({tokens / max(1e-9, elapsed):.0f} tokens/s)")
        hidden = feats[length][0].shape[1] // 2
    cols = {"mean": slice(0, hidden), "last": slice(hidden, 2 * hidden), "mean_last": slice(0, 2 * hidden)}

    def head(length: int, pooling: str, epochs: int, idx: list[int]) -> ValueModel:
        torch.manual_seed(args.seed)
        vm = ValueModel(base.backbone, base.tokenizer, replace(base.config, pooling=pooling, max_length=length))
        fit(vm, [train[i] for i in idx], replace(s, pooling=pooling, epochs=epochs),
            features=feats[length][0][idx][:, cols[pooling]])
        return vm

    candidates = [int(x) for x in args.epochs.split(",")]
    folds = folds_by_task(train, 5, args.seed)
    h_scores = [last_output_ok(e.messages) for e in held]
    heuristic = evaluate_scores(h_scores, held, bootstrap=args.bootstrap, seed=args.seed)

    def on_candidates(scores: list[float]) -> dict | None:
        """The report on the held-out trees' answered candidates alone."""
        if not cand_idx:
            return None
        return evaluate_scores([scores[i] for i in cand_idx], [held[i] for i in cand_idx], bootstrap=args.bootstrap,
                               seed=args.seed)

    heuristic["candidates"] = on_candidates(h_scores)
    results: dict[str, dict] = {}
    for length in lengths:
        f_train, f_held = feats[length]
        for pooling in POOLINGS:
            cv = {}
            for ep in candidates:
                scores, labels = [], []
                for f in folds:
                    vm = head(length, pooling, ep, [i for g in folds if g is not f for i in g])
                    with torch.no_grad():
                        scores += vm.value(f_train[f][:, cols[pooling]]).tolist()
                    labels += [train[i].target > 0 for i in f]
                cv[ep] = auc(scores, labels)
            best = max(candidates, key=lambda ep: (cv[ep] or 0.0, -ep))
            vm = head(length, pooling, best, list(range(len(train))))
            with torch.no_grad():
                scores = vm.value(f_held[:, cols[pooling]]).tolist()
            r = {"max_length": length, "pooling": pooling, "epochs": best, "cv_auc": cv,
                 **evaluate_scores(scores, held, bootstrap=args.bootstrap, seed=args.seed), "scores": scores,
                 "candidates": on_candidates(scores)}
            # paired: the same resampled attempts for the model and the heuristic
            r["minus_heuristic"] = paired_auc_difference(scores, h_scores, [e.target > 0 for e in held],
                                                         [e.tree for e in held], args.bootstrap, args.seed)
            results[f"{pooling}, last {length}"] = r
    chosen = max(results, key=lambda k: results[k]["cv_auc"][results[k]["epochs"]] or 0.0)  # by CV, never held-out

    def fmt(r: dict | None) -> str:
        if not r or r.get("auc") is None:
            return "-"
        ci = r.get("auc_ci")
        return f"{r['auc']:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    table = Table(title=f"held-out AUC: {len(held)} states ({heuristic['positive']} positive, "
                        f"{heuristic['attempts']} attempts or trees; {len(cand_idx)} tree candidates); "
                        f"trained on {len(train)} states "
                        f"({sum(e.target > 0 for e in train)} positive, {len({e.tree for e in train})} attempts); "
                        f"* = chosen by cross-validation on the training tasks")
    for c in ("scorer", "head epochs (CV AUC)", "AUC [95% CI]", "minus heuristic [95% CI]", "depth 1", "depth 3",
              "depth 5", "candidates", "MSE"):
        table.add_column(c)
    for name, r in [*results.items(), ("heuristic: last output ok", heuristic)]:
        epochs = f"{r['epochs']} ({r['cv_auc'][r['epochs']]:.3f})" if "epochs" in r else "-"
        d = r.get("minus_heuristic")
        diff = f"{d['difference']:+.3f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]" if d else "-"
        table.add_row(name + (" *" if name == chosen else ""), epochs, fmt(r), diff,
                      *(fmt(r["by_depth"].get(d)) for d in ("1", "3", "5")), fmt(r["candidates"]), f"{r['mse']:.3f}")
    Console(width=170).print(table)
    c = results[chosen]
    summary = {"train_states": len(train), "train_positive": sum(e.target > 0 for e in train),
               "held_states": len(held), "held_positive": heuristic["positive"], "model": args.model,
               "bf16": args.bf16, "features_s": round(features_s, 1), "chosen": chosen, "auc_chosen": c["auc"],
               "auc_ci_chosen": c["auc_ci"], "auc_by_depth_chosen": {d: r["auc"] for d, r in c["by_depth"].items()},
               "chosen_minus_heuristic": c["minus_heuristic"], "auc_heuristic": heuristic["auc"],
               "auc_ci_heuristic": heuristic["auc_ci"],
               "auc_by_depth_heuristic": {d: r["auc"] for d, r in heuristic["by_depth"].items()},
               "auc_all": {k: r["auc"] for k, r in results.items()}, "held_candidates": len(cand_idx),
               "auc_candidates_chosen": (c["candidates"] or {}).get("auc"),
               "auc_candidates_heuristic": (heuristic["candidates"] or {}).get("auc"),
               "auc_candidates_all": {k: (r["candidates"] or {}).get("auc") for k, r in results.items()}}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"summary": summary, "args": vars(args), "heuristic": heuristic,
                                              "settings": results,
                                              "states": [{"state": e.tree, "depth": e.depth, "target": e.target}
                                                         for e in held]}, indent=1))
        plot_roc(Path(args.out).with_suffix(".png"), {f"value model ({chosen})": c["scores"],
                                                      "heuristic: last output ok": h_scores},
                 [e.target > 0 for e in held], f"{len(held)} held-out states")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
