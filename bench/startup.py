"""Start-up of `responder serve`: from the process's start to `/readyz` answering 200, the
CPU it took, and its RSS then and when idle a few seconds later (issue 20).

Each run is a new `python -m responder serve` on a new SQLite store (`--restart`: on a store
a first start made, at head, as a restart finds it) with N generated rules
(`bench.decision_path.rule_text`, as `bench/load.py` makes them) and no Prefect, or with
`--prefect API_URL` dispatching to that Prefect API. With
`--compare DIR` (another checkout of Responder), the runs alternate between this checkout
and that one, so that the machine's drift hits both; medians are printed per checkout.

Python compiles each module it imports unless it finds the module's bytecode: an installed
Responder has it (pip writes it), a checkout may not (PYTHONDONTWRITEBYTECODE). By default
the runs keep bytecode in a directory of their own (`--pycache`), so that what is measured
is an installed start; `--no-bytecode` measures compiling every module too.

    python bench/startup.py --rules 200 --repeat 5
    python bench/startup.py --rules 200 --repeat 5 --compare ../responder-before
    python bench/startup.py --rules 200 --repeat 5 --restart   # a store at head
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.decision_path import rule_text  # noqa: E402

IDLE_SECONDS = 3.0  # how long after ready the idle RSS is read


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_once(
    checkout: Path,
    rules: int,
    bytecode: Path | None,
    restart: bool = False,
    prefect: str | None = None,
) -> dict[str, Any]:
    """One start of `responder serve` from `checkout`: ready_s, cpu_s, RSS at ready and idle.

    `restart`: the store is not new but at head, as a restart finds it (a first start, not
    measured, made it)."""
    with tempfile.TemporaryDirectory(prefix="responder-startup-") as tmp:
        work = Path(tmp)
        (work / "rules").mkdir()
        (work / "rules" / "bench.yaml").write_text(rule_text(rules))
        env = {
            **os.environ,
            "PYTHONPATH": str(checkout),
            "RESPONDER_DATA_DIR": str(work / "data"),
            "RESPONDER_RULES_DIR": str(work / "rules"),
            "RESPONDER_SERVICES_FILE": str(work / "none.yaml"),
            "RESPONDER_RELOAD_CHECK_SECONDS": "0",
        }
        for name in ("PREFECT_API_URL", "RESPONDER_PREFECT_API_URL", "RESPONDER_DATABASE_URL"):
            env.pop(name, None)
        if prefect is not None:
            env["PREFECT_API_URL"] = prefect
        if bytecode is not None:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(bytecode)
        if restart:
            _serve(checkout, work, env, idle_seconds=0.0)
        return _serve(checkout, work, env, idle_seconds=IDLE_SECONDS)


def _serve(checkout: Path, work: Path, env: dict[str, str], idle_seconds: float) -> dict[str, Any]:
    """Start serve in `work`, measure it until `idle_seconds` after ready, stop it."""
    port = _free_port()
    log = (work / "server.log").open("wb")
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "responder", "serve", "--port", str(port)],
        cwd=checkout,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with httpx.Client() as http:
            while True:
                if process.poll() is not None:
                    raise RuntimeError((work / "server.log").read_text()[-3000:])
                try:
                    if http.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.01)
        ready = time.perf_counter() - started
        result = {
            "ready_s": round(ready, 3),
            "cpu_s": _cpu_seconds(process.pid),
            "rss_ready_mb": round(_status(process.pid, "VmRSS"), 1),
        }
        time.sleep(idle_seconds)
        result["idle_rss_mb"] = round(_status(process.pid, "VmRSS"), 1)
        result["idle_cpu_s"] = _cpu_seconds(process.pid)
        return result
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--compare", type=Path, help="another checkout, run alternately")
    parser.add_argument("--no-bytecode", action="store_true", help="compile every module")
    parser.add_argument("--restart", action="store_true", help="a store at head, not a new one")
    parser.add_argument(
        "--prefect",
        metavar="API_URL",
        help="dispatch to this Prefect API (a server of its own, or an address where none "
        "answers: a Prefect that is down must not hold up readiness)",
    )
    parser.add_argument(
        "--pycache", type=Path, default=Path(tempfile.gettempdir()) / "responder-bench-pycache"
    )
    args = parser.parse_args()
    checkouts = [ROOT, *([args.compare.resolve()] if args.compare else [])]
    bytecode = None if args.no_bytecode else args.pycache
    if bytecode is not None:
        for checkout in checkouts:  # the first start writes the bytecode: not measured
            start_once(checkout, args.rules, bytecode, args.restart, args.prefect)
    runs: dict[Path, list[dict[str, Any]]] = {c: [] for c in checkouts}
    for _ in range(args.repeat):
        for checkout in checkouts:
            result = start_once(checkout, args.rules, bytecode, args.restart, args.prefect)
            runs[checkout].append(result)
            print(json.dumps({"checkout": str(checkout), **result}), flush=True)
    for checkout, results in runs.items():
        medians = {k: round(statistics.median(r[k] for r in results), 3) for k in results[0]}
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(json.dumps({"checkout": str(checkout), "median": medians, "load": load}))


if __name__ == "__main__":
    main()
