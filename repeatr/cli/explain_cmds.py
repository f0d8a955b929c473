"""``explain``: what ``repeatr run`` would do with a formula, without running it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from repeatr.cli.output import Reporter


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "explain",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="show what run would do: defaults, ID, cache, executor, network",
        description="Explain FORMULA without running it: the formula after the cradle's\n"
        "defaults, its ID, which inputs are already in the cache, which executor\n"
        "would run it and why, which network it would get, and its seccomp profile.",
    )
    p.add_argument("formula", metavar="FORMULA")
    p.add_argument("--executor", "-e", default="auto", help="as for run (default: auto)")
    p.set_defaults(func=cmd_explain)


def cmd_explain(args: argparse.Namespace, out: Reporter) -> int:
    from pathlib import Path

    import msgspec

    from repeatr.cache.layout import Layout
    from repeatr.cli.main import cache_root
    from repeatr.errors import ExecutorError
    from repeatr.executors import seccomp
    from repeatr.executors.choose import choose
    from repeatr.memo import MemoStore, formula_key
    from repeatr.model import policy
    from repeatr.model.defaults import apply_defaults
    from repeatr.model.formula import HostMount
    from repeatr.model.formula_id import formula_id
    from repeatr.runner import run as runner

    warn = runner.RunnerEvents(warn=lambda message: out.log(message, level="warning"))
    loaded = runner.load(args.formula, warn)
    frm = apply_defaults(loaded.formula)
    fid = formula_id(loaded.formula)
    state = Path(cache_root(args))
    layout = Layout(state.absolute())
    inputs: dict[str, dict[str, Any]] = {}
    for path, source in sorted(frm.input_sources().items()):
        if isinstance(source, HostMount):
            inputs[path] = {"source": str(source), "cached": None}
        else:
            inputs[path] = {"source": str(source), "cached": layout.shelf(source).is_dir()}
    reasons: list[str] = []
    executor: str | None = None
    executor_problem: str | None = None
    try:
        name, reasons = choose(args.executor, runner.needs(loaded, args.executor))
        executor = str(name)
    except ExecutorError as e:
        executor_problem = str(e)
    net = frm.action.network or "none"
    memoized = MemoStore(state).get(formula_key(fid, args.executor)) is not None
    job_policy = policy.resolve(frm.action.policy)
    filtered = seccomp.PROFILE if policy.seccomp(job_policy) else None
    report = {
        "formulaID": fid,
        "formula": msgspec.to_builtins(frm),
        "inputs": inputs,
        "executor": executor,
        "executorProblem": executor_problem,
        "executorReasons": reasons,
        "network": net,
        "policy": str(job_policy),
        "seccomp": filtered,
        "memoized": memoized,
    }
    lines = [f"formula ID  {fid}"]
    for path, info in inputs.items():
        where = "host mount" if info["cached"] is None else (
            "cached" if info["cached"] else "not cached: will be fetched"
        )
        lines.append(f"input {path:<8} {info['source']}  ({where})")
    lines.append(
        f"executor    {executor}" if executor else f"executor    NONE: {executor_problem}"
    )
    lines += [f"            {reason}" for reason in reasons]
    lines.append(f"network     {net}" + ("" if frm.action.network else " (the default)"))
    lines.append(
        f"seccomp     {filtered} (policy {job_policy})" if filtered
        else f"seccomp     none (policy {job_policy}: every capability, unfiltered)"
    )
    lines.append(f"memoized    {'yes: run prints the stored record' if memoized else 'no'}")
    lines.append("formula after defaults:")
    lines.append(json.dumps({"formula": report["formula"]}, indent="\t"))
    out.result("\n".join(lines), **report)
    return 0
