"""The PyTorch peer of `parallama bench`: the same model, config and training step.

    /usr/bin/python3 bench/torch_bench.py --config configs/bench15m.toml [--threads N] [--json]
    /usr/bin/python3 bench/torch_bench.py --config configs/bench15m.toml --ddp 2   # DDP over gloo

Each step: random tokens (seeded), forward in float32, cross-entropy, backward, AdamW. The
median step time over `bench.steps` steps after `bench.warmup` untimed ones. With --ddp N, N
processes each run the configured batch (global batch = N x batch_size) and gradients are
averaged by DistributedDataParallel over gloo.
"""
import argparse
import json
import os
import statistics
import sys
import time
import tomllib

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import torch_llama as tl  # noqa: E402

PRESETS = {
    "tiny": dict(dim=48, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=80, vocab_size=101,
                 max_seq_len=16, tie_embeddings=False),
    "kjv-small": dict(dim=288, n_layers=6, n_heads=6, n_kv_heads=6, ffn_dim=768, vocab_size=4096,
                      max_seq_len=256, tie_embeddings=True),
    "bench15m": dict(dim=288, n_layers=6, n_heads=6, n_kv_heads=6, ffn_dim=768, vocab_size=32000,
                     max_seq_len=256, tie_embeddings=False),
}
FORMULA = "6*N + 12*L*T*C per token (N = matmul parameters incl. output head)"


def read_config(path):
    with open(path, "rb") as f:
        t = tomllib.load(f)
    m = t.get("model", {})
    cfg = dict(norm_eps=1e-5, rope_theta=10000.0, **PRESETS[m.get("preset", "tiny")])
    cfg.update({k: v for k, v in m.items() if k != "preset"})
    tr, op, be = t.get("train", {}), t.get("optim", {}), t.get("bench", {})
    run = dict(batch_size=tr.get("batch_size", 8), seq_len=tr.get("seq_len", 256),
               seed=tr.get("seed", 1), lr=op.get("lr", 3e-4), beta1=op.get("beta1", 0.9),
               beta2=op.get("beta2", 0.95), eps=op.get("eps", 1e-8),
               weight_decay=op.get("weight_decay", 0.1), steps=be.get("steps", 10),
               warmup=be.get("warmup", 2))
    return cfg, run


def matmul_params(cfg):
    C, D = cfg["dim"], cfg["dim"] // cfg["n_heads"]
    per_layer = C * (cfg["n_heads"] + 2 * cfg["n_kv_heads"]) * D + cfg["n_heads"] * D * C + 3 * C * cfg["ffn_dim"]
    return cfg["n_layers"] * per_layer + cfg["vocab_size"] * C


class Model(torch.nn.Module):
    def __init__(self, cfg, seed):
        super().__init__()
        self.cfg = cfg
        self.weights = torch.nn.ParameterDict(
            {n.replace(".", "__"): torch.nn.Parameter(t) for n, t in tl.init_params(cfg, seed).items()})

    def forward(self, tokens):
        return tl.forward({n.replace("__", "."): t for n, t in self.weights.items()}, self.cfg, tokens)


def run(rank, world, cfg, r, threads, out):
    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
    model = Model(cfg, r["seed"])
    named = {n.replace("__", "."): p for n, p in model.weights.items()}
    opt = tl.make_adamw(named, r["lr"], (r["beta1"], r["beta2"]), r["eps"], r["weight_decay"])
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    g = torch.Generator().manual_seed(r["seed"] + rank)
    B, T, V = r["batch_size"], r["seq_len"], cfg["vocab_size"]
    tokens = torch.randint(0, V, (B, T), generator=g)
    targets = torch.randint(0, V, (B, T), generator=g)
    times = []
    for step in range(r["warmup"] + r["steps"]):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = tl.loss_fn(model(tokens), targets)
        loss.backward()
        opt.step()
        if step >= r["warmup"]:
            times.append(time.perf_counter() - t0)
    if world > 1:
        t = torch.tensor([statistics.median(times)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
        median = t.item()
        dist.destroy_process_group()
    else:
        median = statistics.median(times)
    if rank == 0:
        out.put((median, min(times), max(times), loss.item()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--threads", type=int, default=0, help="threads per process (default: cores / processes)")
    ap.add_argument("--ddp", type=int, default=1, help="processes, data-parallel over gloo")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    cfg, r = read_config(a.config)
    world = a.ddp
    threads = a.threads or max(1, (os.cpu_count() or 1) // world)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    if world > 1:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29517")
        mp.spawn(run, args=(world, cfg, r, threads, out), nprocs=world, join=True)
    else:
        run(0, 1, cfg, r, threads, out)
    median, tmin, tmax, loss = out.get()
    tokens = world * r["batch_size"] * r["seq_len"]
    flops_per_token = 6 * matmul_params(cfg) + 12 * cfg["n_layers"] * r["seq_len"] * cfg["dim"]
    gflops = flops_per_token * tokens / median / 1e9
    print(f"pytorch {torch.__version__}: {world} process(es) x {threads} thread(s), batch {r['batch_size']} x "
          f"{r['seq_len']} per process; median step {median:.4f} s (min {tmin:.4f}, max {tmax:.4f}); "
          f"{tokens / median:.0f} tokens/s; {gflops:.1f} GFLOP/s [{FORMULA}]; loss {loss:.4f}")
    if a.json:
        print(json.dumps(dict(framework="pytorch", version=torch.__version__, ranks=world,
                              threads_per_rank=threads, batch_size=r["batch_size"], seq_len=r["seq_len"],
                              median_step_s=median, tokens_per_s=tokens / median, gflops=gflops,
                              flop_formula=FORMULA, loss=loss)))


if __name__ == "__main__":
    main()
