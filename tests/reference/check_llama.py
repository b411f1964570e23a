"""Checks parallama against the independent PyTorch model, in float64.

Usage: check_llama.py DIR, where DIR holds what tests/reference/dump_llama wrote: batch.json,
model.safetensors (initial weights) and ours.safetensors (our logits, loss, gradients and the
weights after 3 AdamW steps). Every tensor must match with relative error
||ours - ref|| / ||ref|| <= 1e-5. Exits 1 otherwise.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_llama as tl  # noqa: E402

TOL = 1e-5


def main(d):
    batch = json.load(open(os.path.join(d, "batch.json")))
    cfg = batch["config"]
    init = tl.load_safetensors(os.path.join(d, "model.safetensors"))
    ours = tl.load_safetensors(os.path.join(d, "ours.safetensors"))
    expected = tl.param_shapes(cfg)
    if set(init) != set(expected):
        print(f"FAIL: weight names differ from the HF layout: {sorted(set(init) ^ set(expected))}")
        return 1
    params = {n: torch.tensor(init[n], dtype=torch.float64).requires_grad_() for n in expected}
    tokens = torch.tensor(batch["tokens"], dtype=torch.int64)
    targets = torch.tensor(batch["targets"], dtype=torch.int64)

    logits = tl.forward(params, cfg, tokens)
    loss = tl.loss_fn(logits, targets)
    loss.backward()
    if not torch.isfinite(loss):
        print("FAIL: reference loss is not finite")
        return 1
    checks = [("logits", logits.detach()), ("loss", loss.detach().reshape(1))]
    checks += [("grad." + n, params[n].grad) for n in expected]

    a = batch["adamw"]
    for t in params.values():
        t.grad = None
    opt = tl.make_adamw(params, a["lr"], (a["beta1"], a["beta2"]), a["eps"], a["weight_decay"])
    for _ in range(a["steps"]):
        opt.zero_grad()
        tl.loss_fn(tl.forward(params, cfg, tokens), targets).backward()
        opt.step()
    checks += [("step3." + n, params[n].detach()) for n in expected]

    worst = (0.0, "")
    kinds = {}
    failed = False
    for name, ref in checks:
        if name not in ours:
            print(f"FAIL: {name} missing from ours.safetensors")
            failed = True
            continue
        got = torch.tensor(ours[name], dtype=torch.float64)
        if tuple(got.shape) != tuple(ref.shape):
            print(f"FAIL: {name} shape {tuple(got.shape)} != reference {tuple(ref.shape)}")
            failed = True
            continue
        err = ((got - ref).norm() / max(ref.norm().item(), 1e-30)).item()
        kind = name.split(".")[0] if "." in name else name
        kinds[kind] = max(kinds.get(kind, 0.0), err)
        worst = max(worst, (err, name))
        if err > TOL:
            print(f"FAIL: {name} relative error {err:.3e} > {TOL}")
            failed = True
    for kind, err in sorted(kinds.items()):
        print(f"{kind:8s} max relative error {err:.3e}")
    print(f"loss ours {ours['loss'][0]:.8f} reference {loss.item():.8f}; worst {worst[1]} {worst[0]:.3e}")
    if failed:
        return 1
    print(f"PASS max_rel_err={worst[0]:.3e}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
