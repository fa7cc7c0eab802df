#!/usr/bin/env python3
"""Minimal PyTorch DDP training that needs nothing but the environment Kubeloop injects.

Run it under torchrun, which reads the PET_* variables of a TrainingJob worker
(PET_NNODES, PET_NODE_RANK, PET_NPROC_PER_NODE, PET_MASTER_ADDR, PET_MASTER_PORT) and
starts one process per GPU; each process then joins the group through MASTER_ADDR and
MASTER_PORT (torchrun sets RANK, WORLD_SIZE and LOCAL_RANK for it). Without GPUs it
uses the gloo backend on CPU. Hyperparameters come as HP_<NAME> variables or flags;
rank 0 writes the model and a summary to KUBELOOP_OUTPUT_URI (a path or file:// URI),
and reports its progress and loss with kubeloop.train where kubeloop is installed
(docs/training-progress.md).

    torchrun examples/train/ddp.py --steps 100
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import torch
import torch.distributed as dist
from torch import nn

try:  # progress reporting, where the image has kubeloop (it need not: the image is yours)
    import kubeloop.train as progress
except ImportError:
    progress = None  # type: ignore[assignment]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=int(os.environ.get("HP_STEPS", "100")))
    parser.add_argument("--lr", type=float, default=float(os.environ.get("HP_LR", "0.05")))
    parser.add_argument("--batch", type=int, default=int(os.environ.get("HP_BATCH", "256")))
    return parser.parse_args()


def output_dir() -> Path | None:
    uri = os.environ.get("KUBELOOP_OUTPUT_URI", "")
    parts = urlsplit(uri)
    if parts.scheme in ("", "file") and (parts.path or uri):
        return Path(parts.path or uri)
    return None  # Remote URIs are the job image's business (e.g. an uploader).


def main() -> int:
    args = parse_args()
    use_cuda = torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    started = time.perf_counter()
    dist.init_process_group(backend)  # env://: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)

    torch.manual_seed(0)  # the same initial weights everywhere; DDP checks it too
    model = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 1)).to(device)
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if use_cuda else None)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=args.lr)
    truth = torch.randn(32, 1, generator=torch.Generator().manual_seed(7)).to(device)
    data = torch.Generator().manual_seed(1000 + rank)  # each rank its own shard
    first_loss = last_loss = 0.0
    for step in range(args.steps):
        x = torch.randn(args.batch, 32, generator=data).to(device)
        loss = nn.functional.mse_loss(ddp(x), x @ truth)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 0:
            first_loss = loss.item()
        last_loss = loss.item()
        if rank == 0 and progress is not None:
            progress.report(step=step + 1, total_steps=args.steps, metrics={"loss": last_loss})

    # Gradients were averaged by all-reduce, so every rank must hold the same weights.
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    spread = flat.clone()
    dist.all_reduce(spread, op=dist.ReduceOp.MAX)
    lowest = flat.clone()
    dist.all_reduce(lowest, op=dist.ReduceOp.MIN)
    divergence = float((spread - lowest).abs().max())
    summary = {
        "rank": rank,
        "world_size": world,
        "backend": backend,
        "device": torch.cuda.get_device_name(device) if use_cuda else "cpu",
        "master": f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}",
        "steps": args.steps,
        "first_loss": round(first_loss, 6),
        "last_loss": round(last_loss, 6),
        "weights_equal_across_ranks": divergence == 0.0,
        "seconds": round(time.perf_counter() - started, 3),
    }
    print(json.dumps(summary), flush=True)
    out = output_dir()
    if rank == 0 and out is not None:
        out.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), out / "model.pt")
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if rank == 0 and progress is not None:
        progress.finish({"loss": last_loss})
    dist.destroy_process_group()
    return 0 if summary["weights_equal_across_ranks"] and last_loss < first_loss else 1


if __name__ == "__main__":
    raise SystemExit(main())
