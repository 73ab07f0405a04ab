"""Start-up time of the memstore command and of ``import memstore`` (issue 15).

Each command runs in a fresh process, --runs times (default 10); the median wall time is
reported beside the median of ``python -c pass``, the floor no command can go under:

  python -c pass          the interpreter alone
  import memstore         the package, without its memory (lancedb, duckdb) or heads (torch)
  memstore --help         the goal: under 0.5 s
  memstore sql --help     the goal: under 0.5 s
  memstore info PATH      a command that opens a memory (a small one made in a temporary folder)

``--before ROOT`` measures the same commands on another checkout's code too (PYTHONPATH=ROOT,
read-only), in the same run: the runs of both are interleaved, so a load that comes and goes
weighs on both alike. Byte code is cached in a temporary folder (PYTHONPYCACHEPREFIX), as an
installed package has its .pyc files, and nothing is written into either checkout.

    python benchmarks/bench_startup.py
    python benchmarks/bench_startup.py --before /path/to/old/checkout --runs 20

Writes benchmarks/results/startup.json and startup.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_S = 0.5

CLI = "import sys; from memstore.cli import main; sys.exit(main(prog_name='memstore'))"
COMMANDS = {  # name -> (python -c code, its arguments, goal)
    "python -c pass": ("pass", [], ""),
    "import memstore": ("import memstore", [], ""),
    "memstore --help": (CLI, ["--help"], f"< {GOAL_S} s"),
    "memstore sql --help": (CLI, ["sql", "--help"], f"< {GOAL_S} s"),
    "memstore info PATH": (CLI, ["info", "{memory}"], ""),
}

MAKE_MEMORY = """
import sys, numpy as np, memstore
mem = memstore.open(sys.argv[1], create=True)
mem.add(np.random.default_rng(0).standard_normal((100, 8)).astype("f4"), ["a", "b"] * 50)
"""


def environment(root: Path, pycache: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONPYCACHEPREFIX=str(pycache))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the cache is the temporary folder's, not the checkout's
    return env


def describe(root: Path) -> str:
    """The checkout's path and commit, and whether its tracked files differ from the commit."""
    git = ["git", "-C", str(root)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    changed = subprocess.run([*git, "status", "--porcelain", "-uno"], capture_output=True, text=True).stdout.strip()
    return f"{root} at {commit or 'no commit'}" + (" with uncommitted changes" if changed else "")


def run_once(code: str, args: list[str], root: Path, env: dict) -> float:
    """Wall seconds of one fresh `python -c code args` (in root: -c puts the working directory first)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *args], cwd=root, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(codes: dict[str, Path], runs: int, memory: Path, pycache: Path) -> dict:
    """{code: {command: [seconds, ...]}}, the runs of every command and code interleaved."""
    envs = {label: environment(root, pycache) for label, root in codes.items()}
    times = {label: {name: [] for name in COMMANDS} for label in codes}
    for i in range(runs + 1):  # run 0 warms the byte-code cache and the file cache, and is dropped
        for label, root in codes.items():
            for name, (code, args, _) in COMMANDS.items():
                seconds = run_once(code, [a.format(memory=memory) for a in args], root, envs[label])
                if i:
                    times[label][name].append(seconds)
    return times


def summarise(times: dict) -> dict:
    out = {}
    for label, by_command in times.items():
        floor = statistics.median(by_command["python -c pass"])
        out[label] = {name: {"median_s": round(statistics.median(t), 4),
                             "ratio_to_python": round(statistics.median(t) / floor, 1),
                             "runs_s": [round(x, 4) for x in t]} for name, t in by_command.items()}
    return out


def markdown(result: dict) -> str:
    labels = list(result["codes"])
    head = ["command"] + [f"{label}: {h}" for label in labels for h in ("median s", "÷ python -c pass")]
    lines = [f"# memstore start-up, median of {result['runs']} fresh processes", "",
             "| " + " | ".join(head + ["goal"]) + " |", "|" + "---|" * (len(head) + 1)]
    for name, (_, _, goal) in COMMANDS.items():
        cells = [f"`{name}`"]
        for label in labels:
            row = result["summary"][label][name]
            cells += [f"{row['median_s']:.3f}", f"{row['ratio_to_python']:.1f}"]
        lines.append("| " + " | ".join(cells + [goal]) + " |")
    codes = "; ".join(f"{label}: {where}" for label, where in result["codes"].items())
    lines += ["", f"Code measured ({codes}), Python {result['python']}, {result['cpu']}, "
              f"{result['cpus']} CPUs; load average {result['load_before']} before and "
              f"{result['load_after']} after the run.",
              "Another job was loading the machine while this ran: the ratios to `python -c pass`, measured "
              "in the same interleaved runs, say more than the seconds.",
              "", f"`{result['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--before", type=Path, help="another checkout to measure too (PYTHONPATH, read-only)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    codes = ({"before": args.before.resolve()} if args.before else {}) | {"after": ROOT}
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        memory, pycache = Path(tmp) / "small.mem", Path(tmp) / "pycache"
        subprocess.run([sys.executable, "-c", MAKE_MEMORY, str(memory)], cwd=ROOT, check=True,
                       env=environment(ROOT, pycache))
        times = measure(codes, args.runs, memory, pycache)
    result = {"runs": args.runs, "codes": {k: describe(v) for k, v in codes.items()}, "goal_s": GOAL_S,
              "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "load_before": load_before,
              "load_after": [round(x, 2) for x in os.getloadavg()],
              "command": " ".join(["python benchmarks/bench_startup.py", *(sys.argv[1:] if argv is None else argv)]),
              "summary": summarise(times)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "startup.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "startup.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
