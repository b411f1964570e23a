"""The PyTorch peer of `parallama bench`: the same model, configuration and training step.

    /usr/bin/python3 bench/torch_bench.py --config configs/bench15m.toml [--threads N] [--json]
    /usr/bin/python3 bench/torch_bench.py --config configs/bench15m.toml --ddp 2 [--threads N]

Each step: zero the gradients, forward in float32 on random tokens (seeded), cross-entropy,
backward, AdamW step (weight decay on matrices only). Steps are timed with time.perf_counter
after `bench.warmup` untimed ones; the median is reported. With --ddp N, N processes train with
DistributedDataParallel over gloo on localhost, each on its own batch of train.batch_size
sequences (global batch N x batch_size); the slowest rank's median sets the step time.

GFLOP/s = (6 * N_matmul + 12 * n_layers * seq_len * dim) * tokens per step / median step time,
with N_matmul the parameters of all projection matrices and the output head (the embedding
lookup is not a matmul).
"""
import argparse
import json
import os
import socket
import statistics
import sys
import time
import tomllib

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import torch_llama as tl  # noqa: E402

COMMON = dict(norm_eps=1e-5, rope_theta=10000.0)
PRESETS = {
    # The same shapes as parallama's presets (src/model/config.cpp).
    "tiny": dict(dim=48, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=80, vocab_size=101,
                 max_seq_len=16, tie_embeddings=False, **COMMON),
    "kjv-small": dict(dim=288, n_layers=6, n_heads=6, n_kv_heads=6, ffn_dim=768, vocab_size=4096,
                      max_seq_len=256, tie_embeddings=True, **COMMON),
    "bench15m": dict(dim=288, n_layers=6, n_heads=6, n_kv_heads=6, ffn_dim=768, vocab_size=32000,
                     max_seq_len=256, tie_embeddings=False, **COMMON),
}
MODEL_KEYS = ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size", "max_seq_len",
              "norm_eps", "rope_theta", "tie_embeddings")
DEFAULTS = dict(batch_size=8, seq_len=256, seed=1, lr=3e-4, beta1=0.9, beta2=0.95, eps=1e-8,
                weight_decay=0.1, steps=10, warmup=2)
FLOP_FORMULA = "6*N + 12*L*T*C per token (N = matmul parameters incl. output head)"


def read_config(path):
    """(model config dict, run settings dict) from a parallama TOML file."""
    with open(path, "rb") as f:
        toml = tomllib.load(f)
    m = toml.get("model", {})
    preset = m.get("preset", "tiny")
    if preset not in PRESETS:
        sys.exit(f"unknown model.preset {preset!r}; pick one of {', '.join(PRESETS)}")
    cfg = dict(PRESETS[preset], name=preset)
    cfg.update({k: m[k] for k in MODEL_KEYS if k in m})
    run = dict(DEFAULTS)
    for table, keys in (("train", ("batch_size", "seq_len", "seed")),
                        ("optim", ("lr", "beta1", "beta2", "eps", "weight_decay")),
                        ("bench", ("steps", "warmup"))):
        t = toml.get(table, {})
        run.update({k: t[k] for k in keys if k in t})
    if cfg["dim"] % cfg["n_heads"] or cfg["n_heads"] % cfg["n_kv_heads"]:
        sys.exit("dim must be a multiple of n_heads, and n_heads of n_kv_heads")
    if not 1 <= run["seq_len"] <= cfg["max_seq_len"]:
        sys.exit(f"train.seq_len {run['seq_len']} must be between 1 and model.max_seq_len {cfg['max_seq_len']}")
    if run["batch_size"] < 1 or run["steps"] < 1 or run["warmup"] < 0:
        sys.exit("train.batch_size and bench.steps must be at least 1, bench.warmup at least 0")
    return cfg, run


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, world, cfg, run, threads, results):
    """Builds the model, trains warmup + steps steps and puts rank 0's summary in `results`."""
    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
    model = tl.build_model(cfg, dtype=torch.float32, seed=run["seed"])
    opt = tl.make_adamw(model.named_parameters(), run["lr"], (run["beta1"], run["beta2"]), run["eps"],
                        run["weight_decay"])
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    B, T, V = run["batch_size"], run["seq_len"], cfg["vocab_size"]
    g = torch.Generator().manual_seed(run["seed"] * 1000 + rank)
    tokens = torch.randint(0, V, (B, T), generator=g)
    targets = torch.randint(0, V, (B, T), generator=g)

    times = []
    for step in range(run["warmup"] + run["steps"]):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = tl.cross_entropy(net(tokens), targets)
        loss.backward()
        opt.step()
        if step >= run["warmup"]:
            times.append(time.perf_counter() - t0)

    median = statistics.median(times)
    if world > 1:
        t = torch.tensor([median], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        median = t.item()
        dist.destroy_process_group()
    if rank == 0:
        results.put(dict(median=median, min=min(times), max=max(times), loss=loss.item()))


def main():
    ap = argparse.ArgumentParser(description="PyTorch peer benchmark of parallama's training step.")
    ap.add_argument("--config", required=True, help="parallama TOML file")
    ap.add_argument("--threads", type=int, default=0,
                    help="threads per process (default: all cores; 1 per rank with --ddp)")
    ap.add_argument("--ddp", type=int, default=0, metavar="N",
                    help="N processes, DistributedDataParallel over gloo on localhost")
    ap.add_argument("--json", action="store_true", help="print a JSON object as the last line")
    args = ap.parse_args()

    cfg, run = read_config(args.config)
    world = max(1, args.ddp)
    if args.threads > 0:
        threads = args.threads
    else:
        threads = 1 if args.ddp else (os.cpu_count() or 1)

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    if args.ddp:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(free_port())
        mp.spawn(worker, args=(world, cfg, run, threads, results), nprocs=world, join=True)
    else:
        worker(0, 1, cfg, run, threads, results)
    r = results.get()

    tokens_per_step = world * run["batch_size"] * run["seq_len"]
    n_matmul = tl.matmul_param_count(cfg)
    flops_per_token = 6 * n_matmul + 12 * cfg["n_layers"] * run["seq_len"] * cfg["dim"]
    tokens_per_s = tokens_per_step / r["median"]
    gflops = flops_per_token * tokens_per_s / 1e9
    n_params = sum(p.numel() for p in tl.LlamaForCausalLM(cfg).parameters())

    print(f"pytorch {torch.__version__} model {cfg['name']}: {n_params / 1e6:.2f}M parameters "
          f"({n_matmul / 1e6:.2f}M in matmuls); {world} rank(s) x {threads} thread(s), batch "
          f"{run['batch_size']} x {run['seq_len']} per rank; step median {r['median']:.4f} s "
          f"(min {r['min']:.4f}, max {r['max']:.4f}, {run['steps']} steps after {run['warmup']} warm-up); "
          f"{tokens_per_s:.0f} tokens/s; {gflops:.2f} GFLOP/s [{FLOP_FORMULA}]; loss {r['loss']:.4f}")
    if args.json:
        print(json.dumps(dict(framework="pytorch", model=cfg["name"], ranks=world, threads_per_rank=threads,
                              batch_size=run["batch_size"], seq_len=run["seq_len"], steps=run["steps"],
                              warmup=run["warmup"], median_step_s=r["median"], tokens_per_s=tokens_per_s,
                              gflops=gflops, flop_formula=FLOP_FORMULA, loss=r["loss"])))


if __name__ == "__main__":
    main()
