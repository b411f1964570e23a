"""Compares two training runs.

    compare.py metrics A/metrics.jsonl B/metrics.jsonl [--from STEP] [--tol T] [--norm]
        the loss (and val_loss) at every common step from STEP on: |a - b| / |b| <= T;
        with --norm also the gradient norm of the first of those steps (both runs start from
        the same parameters there, so a norm that counts a shard twice or misses one shows)
    compare.py params A/model.safetensors B/model.safetensors [--tol T]
        every tensor: ||a - b|| / ||b|| <= T
Exits 1 on a difference beyond the tolerance (default 1e-5), printing the worst.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import torch_llama as tl  # noqa: E402


def metrics(a, b, first, tol, norm=False):
    ra = {j["step"]: j for j in map(json.loads, open(a))}
    rb = {j["step"]: j for j in map(json.loads, open(b))}
    steps = sorted(s for s in set(ra) & set(rb) if s >= first)
    if not steps:
        print("FAIL: no common steps")
        return 1
    worst = (0.0, "")
    for s in steps:
        for key in ("loss", "val_loss"):
            if key in ra[s] and key in rb[s]:
                err = abs(ra[s][key] - rb[s][key]) / abs(rb[s][key])
                worst = max(worst, (err, f"step {s} {key}"))
    if norm:
        s = steps[0]
        err = abs(ra[s]["grad_norm"] - rb[s]["grad_norm"]) / abs(rb[s]["grad_norm"])
        worst = max(worst, (err, f"step {s} grad_norm"))
    print(f"{len(steps)} steps compared; worst {worst[1]}: relative difference {worst[0]:.2e}")
    return 0 if worst[0] <= tol else 1


def params(a, b, tol):
    ta, tb = tl.load_safetensors(a), tl.load_safetensors(b)
    if set(ta) != set(tb):
        print(f"FAIL: tensor names differ: {sorted(set(ta) ^ set(tb))}")
        return 1
    worst = max((np.linalg.norm(ta[n].astype(np.float64) - tb[n]) / max(np.linalg.norm(tb[n].astype(np.float64)), 1e-30), n)
                for n in ta)
    print(f"{len(ta)} tensors compared; worst {worst[1]}: relative error {worst[0]:.2e}")
    return 0 if worst[0] <= tol else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["metrics", "params"])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--from", dest="first", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--norm", action="store_true")
    o = ap.parse_args()
    sys.exit(metrics(o.a, o.b, o.first, o.tol, o.norm) if o.kind == "metrics" else params(o.a, o.b, o.tol))
