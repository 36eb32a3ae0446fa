"""`fedzo evaluate`: zero-shot accuracy of a model on a task split (no training)."""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from fedzo.errors import ConfigError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``evaluate`` command."""
    p = subparsers.add_parser(
        "evaluate",
        help="zero-shot accuracy of a model on a task split",
        description="Evaluate a model (prompt + verbalizer for causal LMs) on a task split.",
    )
    p.add_argument("--model", default="smollm2-135m", help="embedded name, local dir or hub id")
    p.add_argument("--task", default="rotten-tomatoes", help="embedded task, hf:NAME[:CONFIG] or a path")
    p.add_argument("--prompt", default=None, help="prompt name (default: the task's best measured)")
    p.add_argument("--split", default="test", choices=("train", "dev", "test"))
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N examples only")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=None, help="default: the task's")
    p.add_argument("--seed", type=int, default=0, help="split seed of the task")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16", "float32", "bfloat16", "float16"),
                   help="precision of the model, as model.dtype in a scenario (torch's names also accepted)")
    p.add_argument("--text-column", default=None, help="text column of a user dataset")
    p.add_argument("--label-column", default=None, help="label column of a user dataset")
    p.add_argument("--label-names", nargs="+", default=None, metavar="NAME",
                   help="label values of a user dataset, in label order")
    p.add_argument("--verbalizer", nargs="+", default=None, metavar="WORD",
                   help="answer word of each label (default: the label names)")
    p.add_argument("--template", default=None, help="prompt template with {text} for a user dataset")
    p.add_argument("--cache-dir", default=None, help="asset cache (default: $FEDZO_CACHE or ~/.cache/fedzo)")
    p.add_argument("--run", metavar="DIR", default=None,
                   help="evaluate the global model of a federated run directory (ZO: the initial model with "
                        "its update log replayed; FedAvg: its kept global weights); --model/--task/--prompt "
                        "come from the run")
    p.add_argument("--round", type=int, default=None, dest="round_",
                   help="with --run: the global model after this many rounds (ZO runs: their update log replayed "
                        "that far; a FedAvg run keeps only its last round's weights)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load model and task, evaluate, print the metrics."""
    from transformers.utils import logging as hf_logging

    from fedzo.models import load_model
    from fedzo.tasks.classifiers import build_classifier
    from fedzo.tasks.registry import load_task
    from fedzo.tasks.user import TaskOptions

    hf_logging.disable_progress_bar()

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit} must be >= 1")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} must be >= 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.round_ is not None and not args.run:
        raise ConfigError(f"--round {args.round_} needs --run DIR (the run whose global model to rebuild)")
    if args.run:
        return _evaluate_run(args)
    t0 = time.perf_counter()
    from fedzo.tasks.objective import TORCH_DTYPES

    dtype = TORCH_DTYPES.get(args.dtype) or getattr(torch, args.dtype)  # the scenario's names, or torch's
    loaded = load_model(args.model, dtype=dtype, cache_dir=args.cache_dir)
    load_s = time.perf_counter() - t0
    given = {"text_column": args.text_column, "label_column": args.label_column,
             "label_names": tuple(args.label_names) if args.label_names else None,
             "verbalizer": tuple(args.verbalizer) if args.verbalizer else None, "template": args.template}
    options = TaskOptions(**given) if any(v is not None for v in given.values()) else None
    task = load_task(args.task, seed=args.seed, cache_dir=args.cache_dir, options=options)
    clf = build_classifier(loaded, task, args.prompt, max_length=args.max_length)
    examples = task.split(args.split)[: args.limit]
    t1 = time.perf_counter()
    metrics = clf.evaluate(examples, batch_size=args.batch_size)
    eval_s = time.perf_counter() - t1
    prompt = getattr(getattr(clf, "prompt", None), "name", None)
    result = {
        "model": loaded.name,
        "task": task.name,
        "prompt": prompt,
        "split": args.split,
        **metrics,
        "load_seconds": round(load_s, 2),
        "eval_seconds": round(eval_s, 2),
        "threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        counts = ", ".join(f"{n}={c}" for n, c in zip(task.label_names, metrics["pred_counts"], strict=True))
        print(
            f"{loaded.name} on {task.name}/{args.split} (prompt {prompt}): "
            f"accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, n {metrics['n']}; "
            f"predicted {counts}; load {load_s:.1f} s, eval {eval_s:.1f} s"
        )
    return 0


def _evaluate_run(args: argparse.Namespace) -> int:
    """``--run DIR``: rebuild the run's global model from its log and evaluate it."""
    from fedzo.federation.server.global_model import load_global_model
    from fedzo.tasks.registry import load_task

    t0 = time.perf_counter()
    gm = load_global_model(args.run, args.round_)
    load_s = time.perf_counter() - t0
    if gm.torn_line is not None:
        print(f"fedzo: {args.run}/update_log.jsonl:{gm.torn_line}: the last line is torn (an interrupted write); "
              f"used the {gm.rounds} rounds before it", file=sys.stderr)
    task = load_task(gm.scenario.data.task, seed=gm.scenario.seed, cache_dir=args.cache_dir,
                     options=gm.scenario.data.task_options())
    examples = task.split(args.split)[: args.limit]
    t1 = time.perf_counter()
    metrics = gm.objective.classifier.evaluate(examples, batch_size=args.batch_size)
    eval_s = time.perf_counter() - t1
    result = {
        "run": str(args.run), "model": gm.scenario.model.name, "task": task.name, "split": args.split,
        "rounds": gm.rounds, "torn_line": gm.torn_line, "model_sha256": gm.model_sha256, "matches_summary": gm.matches_summary,
        **metrics, "load_seconds": round(load_s, 2), "eval_seconds": round(eval_s, 2),
        "threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        check = {True: "matches summary.json", False: "DIFFERS from summary.json",
                 None: "no summary.json (run unfinished)"}[gm.matches_summary]
        print(f"{args.run}: global model after {gm.rounds} rounds ({check}) on {task.name}/{args.split}: "
              f"accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, n {metrics['n']}; "
              f"rebuild {load_s:.1f} s, eval {eval_s:.1f} s")
    return 0
