"""`fedzo bench ...`: benchmarks that print ratios measured in one run."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `bench` sub-command group."""
    p = sub.add_parser("bench", help="benchmarks (ratios measured in one run)")
    bsub = p.add_subparsers(dest="bench", metavar="BENCH")
    bsub.required = True
    z = bsub.add_parser("zo", help="ZO step vs two forwards; memory vs inference; MeZO reference; backprop")
    z.add_argument("--model", default=None, help="model name (default: smollm2-135m if cached, else tiny-llama); "
                                                 "'tiny' means tiny-llama")
    z.add_argument("--batch", type=int, default=16)
    z.add_argument("--seq", type=int, default=64)
    z.add_argument("--repeats", type=int, default=3)
    z.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    z.add_argument("--chunk-size", type=int, default=1 << 20)
    z.add_argument("--no-compile", action="store_true", help="eager portable generator only")
    z.add_argument("--json", action="store_true", help="print the report as JSON")
    z.set_defaults(func=_zo)
    f = bsub.add_parser("federation", help="uplink bytes per client-round; server time 1000 vs 10 clients")
    f.add_argument("--k", type=int, default=10, help="local steps (seeds) per round")
    f.add_argument("--numel", type=int, default=500_000, help="parameters the server replays onto")
    f.add_argument("--json", action="store_true", help="print the report as JSON")
    f.set_defaults(func=_federation)
    _add_engine_benches(bsub)
    fl = bsub.add_parser("faults", help="fault injection: resume after a kill per fault kind; Byzantine "
                                        "clients x aggregator (tiny model)")
    fl.add_argument("--rounds", type=int, default=8)
    fl.add_argument("--clients", type=int, default=5, help="clients (all participate every round)")
    fl.add_argument("--fraction", type=float, default=0.2, help="faulty fraction per fault kind")
    fl.add_argument("--byzantine-fraction", type=float, default=0.2)
    fl.add_argument("--byzantine-kinds", default="sign_flip,random,scale",
                    help="comma-separated: sign_flip, scale, nan, inf, random")
    fl.add_argument("--persistent", action="store_true",
                    help="the same Byzantine clients lie in every round (default: re-drawn per round)")
    fl.add_argument("--seed", type=int, default=0)
    fl.add_argument("--kinds", default="all",
                    help="fault kinds of the crash-resume part, comma-separated: 'all', 'none' or some of "
                         "crash_before, crash_after, straggler, dropout, duplicate, stale, byzantine")
    fl.add_argument("--eval-examples", type=int, default=64, help="examples the accuracies are measured on")
    fl.add_argument("--train-examples", type=int, default=160, help="training examples split over the clients")
    fl.add_argument("--lr", type=float, default=2e-3, help="ZO learning rate of every run")
    fl.add_argument("--json", action="store_true", help="print the report as JSON")
    fl.set_defaults(func=_faults)


def _add_engine_benches(bsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`fedzo bench batched` and `fedzo bench engines`: host seconds per round by engine."""
    b = bsub.add_parser("batched", help="host seconds per round: batched engine vs in-process, same runs")
    b.add_argument("--scenario", default="scenarios/quickstart.yaml")
    b.add_argument("--participants", type=int, nargs="+", default=[2, 8, 16], help="clients sampled per round")
    b.add_argument("--rounds", type=int, default=3, help="rounds per run (each timed; evaluation excluded)")
    b.add_argument("--max-rows", type=int, default=None, help="federation.batched.max_rows (default: scenario's)")
    b.add_argument("--max-padding", type=float, default=None,
                   help="federation.batched.max_padding (default: scenario's)")
    b.add_argument("--repeats", type=int, default=1, help="runs of each engine per participant count")
    b.add_argument("--json", action="store_true", help="print the report as JSON")
    b.set_defaults(func=_batched)
    e = bsub.add_parser("engines", help="host seconds per round: in-process, batched and simulation engines, "
                                        "tiny model and SmolLM2-135M, same run")
    e.add_argument("--cases", nargs="+", choices=("tiny", "smollm2"), default=["tiny", "smollm2"])
    e.add_argument("--engines", nargs="+", default=["inprocess", "batched", "simulation"],
                   help="engines to time (in-process always runs: the ratios are to it)")
    e.add_argument("--participants", type=int, nargs="+", default=None,
                   help="clients per round for every case (default: tiny 10 100 1000, smollm2 10 100)")
    e.add_argument("--repeats", type=int, default=1, help="runs of each engine per case")
    e.add_argument("--json", action="store_true", help="print the report as JSON")
    e.set_defaults(func=_engines)


def _zo(args: argparse.Namespace) -> int:
    from fedzo.bench.zo import default_model, format_report, run_bench

    model = args.model or default_model()
    if model == "tiny":
        model = "tiny-llama"
    report = run_bench(model, args.batch, args.seq, repeats=args.repeats, compile=not args.no_compile,
                       chunk_size=args.chunk_size, threads=args.threads)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _federation(args: argparse.Namespace) -> int:
    from fedzo.bench.federation import format_report, run_bench

    report = run_bench(numel=args.numel, k=args.k)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _batched(args: argparse.Namespace) -> int:
    from fedzo.bench.batched import format_report, run_bench

    over = {k: v for k, v in (("max_rows", args.max_rows), ("max_padding", args.max_padding)) if v is not None}
    report = run_bench(args.scenario, args.participants, args.rounds, over, args.repeats)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _engines(args: argparse.Namespace) -> int:
    import dataclasses

    from fedzo.bench.engines import SUITE, format_report, run_bench

    cases = tuple(c for c in SUITE if c.name in args.cases)
    if args.participants:
        cases = tuple(dataclasses.replace(c, participants=tuple(args.participants)) for c in cases)
    report = run_bench(cases, tuple(args.engines), args.repeats)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _kinds(option: str, text: str, allowed: tuple[str, ...]) -> list[str]:
    """A comma-separated list of ``allowed`` names ('all' and 'none' too); unknown names are an error."""
    from fedzo.errors import ConfigError

    if text.strip() in ("all", "none"):
        return list(allowed) if text.strip() == "all" else []
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(allowed))
    if unknown:
        raise ConfigError(f"{option}: {', '.join(unknown)} not known; allowed: {', '.join(allowed)}")
    return kinds


def _faults(args: argparse.Namespace) -> int:
    from fedzo.bench.faults import FAULT_KINDS, format_report, run_bench
    from fedzo.federation.transports.faults import BYZANTINE_KINDS

    report = run_bench(rounds=args.rounds, num_clients=args.clients, fraction=args.fraction,
                       byzantine_fraction=args.byzantine_fraction,
                       byzantine_kinds=_kinds("--byzantine-kinds", args.byzantine_kinds, BYZANTINE_KINDS),
                       kinds=_kinds("--kinds", args.kinds, FAULT_KINDS), seed=args.seed, persistent=args.persistent,
                       eval_examples=args.eval_examples,
                       train_examples=args.train_examples, lr=args.lr)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
