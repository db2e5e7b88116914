"""Benchmark: a model preset on one device, step time and peak memory per training setup.

The single-GPU figures for the opens2s-8b preset (random init, bf16): each setup builds the
model afresh, freezes what its stage does not train, wraps it the way the training loop does
(the generated DeepSpeed config, the same LR schedule), runs ``--warmup`` then ``--steps``
optimizer steps on micro-batches of the toy corpus, and reports the median step time, samples/s,
peak device memory and host memory. The baseline, measured in the same run, is the ``align``
stage under plain PyTorch AdamW (no DeepSpeed); ``zero2_over_plain_step_time`` compares ZeRO-2 to
it on the same stage.

No Ray (one device needs no worker group), so it runs where only torch, transformers,
DeepSpeed and this package are installed. Each setup runs in a process of its own, so that
memory an earlier engine still holds, or its first-use costs, do not count toward the next. A
setup that fails (out of memory, an op that does not build, a crash) is reported with its
error and the others still run. The last line of output is one JSON object.

    python bench/train_preset.py --preset opens2s-8b --device cuda      # on a GPU
    python bench/train_preset.py --preset tiny --device cpu --setups plain_align,zero2_align
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PLATFORM = Path(__file__).resolve().parents[1] / "platform"
if str(_PLATFORM) not in sys.path:
    sys.path.insert(0, str(_PLATFORM))

import torch  # noqa: E402
from opens2s.config.train import LoraSection, Stage, TrainSection  # noqa: E402
from opens2s.model import build_model, build_tokenizer  # noqa: E402
from opens2s.model.records import (  # noqa: E402
    RecordEncoder,
    RecordError,
    collate,
    parse_record,
    to_device,
)
from opens2s.model.tokenizer import AUDIO_TOKEN  # noqa: E402
from opens2s.train.deepspeed_config import (  # noqa: E402
    WarmupLinearDecay,
    deepspeed_config,
    skip_shm_comm_build,
)
from opens2s.train.stages import add_lora, apply_stage  # noqa: E402
from opens2s.train.toy_corpus import write_toy_corpus  # noqa: E402


@dataclass(frozen=True)
class Setup:
    """One way to train one stage: plain PyTorch (``zero_stage`` None) or a DeepSpeed config."""

    name: str
    stage: Stage
    zero_stage: int | None
    offload_optimizer: bool = False
    offload_params: bool = False
    lora: bool = False


SETUPS = (
    Setup("plain_align", "align", None),
    Setup("zero2_align", "align", 2),
    Setup("zero2_finetune_lora", "finetune", 2, lora=True),
    Setup("zero3_finetune_lora_offload", "finetune", 3, True, True, lora=True),
)
"""Full finetuning of opens2s-8b is not among them: its fp32 AdamW state alone (~9B parameters x
12 bytes, ~105 GB) outgrows one GPU, and the host memory of a one-GPU machine with offload; it
is ZeRO-3 across a node's 8 GPUs (``jobs/configs/opens2s-8b.yaml``)."""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--setups", default=",".join(s.name for s in SETUPS))
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one setup in this process
    args = p.parse_args()
    by_name = {s.name: s for s in SETUPS}
    unknown = [n for n in args.setups.split(",") if n not in by_name]
    if unknown:
        p.error(f"unknown setups {unknown}; choose from {list(by_name)}")
    on_gpu = args.device.startswith("cuda")
    if args.one:
        if not on_gpu:
            skip_shm_comm_build()
        _init_single_process_group(on_gpu)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                result = run_setup(by_name[args.one], args, Path(tmp))
            except Exception as e:  # reported; the parent still runs the next setup
                result = {"error": f"{type(e).__name__}: {e}"[:500]}
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return

    # Each setup runs in a process of its own: no memory a previous engine still holds counts
    # toward the next one's peak, and each pays its own first-use costs (order does not matter).
    results: dict[str, Any] = {}
    for name in args.setups.split(","):
        print(f"[{name}] building {args.preset} on {args.device}", flush=True)
        results[name] = _run_child(name, sys.argv[1:])
        print(f"[{name}] {json.dumps(results[name])}", flush=True)

    plain = results.get("plain_align", {}).get("step_time_s")
    zero2 = results.get("zero2_align", {}).get("step_time_s")
    summary = {
        "preset": args.preset,
        "device": torch.cuda.get_device_name() if on_gpu else "cpu",
        "dtype": "bfloat16" if on_gpu else "float32",
        "micro_batch": args.micro_batch,
        "steps": args.steps,
        "zero2_over_plain_step_time": zero2 / plain if plain and zero2 else None,
        "setups": results,
    }
    print(json.dumps(summary))


RESULT_PREFIX = "setup-result: "


def _run_child(name: str, argv: list[str]) -> dict[str, Any]:
    """One setup in a child process; its figures, or the reason it failed."""
    cmd = [sys.executable, __file__, *argv, "--one", name]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # stderr streams through
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    return {"error": f"the setup's process exited {proc.returncode} (its stderr is above)"}


def run_setup(setup: Setup, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Build, wrap and train one setup; its figures."""
    on_gpu = args.device.startswith("cuda")
    dtype = torch.bfloat16 if on_gpu else torch.float32
    t0 = time.perf_counter()
    model = build_model(args.preset, device=args.device, dtype=dtype)
    tokenizer = build_tokenizer("tiny")  # any ids work for timing; the 8B vocabulary holds them
    model.config.audio_token_id = tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)
    batches = [  # on the device once, not again every step
        {key: to_device(v, args.device, dtype) for key, v in batch.items()}
        for batch in _toy_batches(model, tokenizer, args.micro_batch, tmp)
    ]
    apply_stage(model, setup.stage)
    if setup.lora:
        add_lora(model, LoraSection())
    model.train()
    trainable = [q for q in model.parameters() if q.requires_grad]
    n_trainable = sum(q.numel() for q in trainable)
    train = TrainSection(
        zero_stage=setup.zero_stage or 0,
        offload_optimizer=setup.offload_optimizer,
        offload_params=setup.offload_params,
        micro_batch_size=args.micro_batch,
        warmup_steps=args.warmup,  # LR warmup over the untimed steps
        max_steps=args.warmup + args.steps,
        use_gpu=on_gpu,
        precision="auto",
    )
    schedule = WarmupLinearDecay.from_section(train)
    if setup.zero_stage is None:
        optimizer = torch.optim.AdamW(
            trainable, lr=train.lr, weight_decay=train.weight_decay, fused=on_gpu
        )
        scheduler = schedule.scheduler(optimizer)

        def step(batch: dict[str, torch.Tensor]) -> float:
            out = model(**batch)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, train.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            return float(out.loss.detach())

    else:
        import deepspeed

        config = deepspeed_config(train, world_size=1, on_gpu=on_gpu)
        engine, _, _, _ = deepspeed.initialize(
            model=model, model_parameters=trainable, config=config, lr_scheduler=schedule.scheduler
        )

        def step(batch: dict[str, torch.Tensor]) -> float:
            out = engine(**batch)
            engine.backward(out.loss)
            engine.step()
            return float(out.loss.detach())

    build_s = time.perf_counter() - t0
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for k in range(args.warmup + args.steps):
        batch = batches[k % len(batches)]
        if on_gpu:
            torch.cuda.synchronize()
        t = time.perf_counter()
        losses.append(step(batch))  # float(): waits for the step's kernels
        if on_gpu:
            torch.cuda.synchronize()
        if k >= args.warmup:
            times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    return {
        "trainable_params": n_trainable,
        "build_and_wrap_s": round(build_s, 2),
        "step_time_s": step_s,
        "samples_per_s": args.micro_batch / step_s,
        "peak_device_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None,
        "host_rss_gb": _rss_gb(),
        "loss_first": losses[0],
        "loss_last": losses[-1],
    }


def _toy_batches(model, tokenizer, micro_batch: int, tmp: Path) -> list[dict[str, torch.Tensor]]:
    """Collated micro-batches of the toy corpus, encoded for ``model`` (bad records skipped)."""
    root = tmp / "corpus"
    if not root.exists():
        write_toy_corpus(root, n_good=4 * micro_batch, spk_dim=model.config.spk_emb_dim)
    encoder = RecordEncoder(tokenizer, model.config, root)
    samples = []
    for shard in sorted((root / "shards").glob("*.jsonl")):
        for line in shard.read_text().splitlines():
            try:
                record = parse_record(
                    json.loads(line), unit_vocab_size=model.config.unit_vocab_size
                )
                samples.append(encoder.encode(record))
            except RecordError:
                continue  # the toy corpus's two broken records
    return [collate(samples[i : i + micro_batch]) for i in range(0, len(samples), micro_batch)]


def _rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def _init_single_process_group(on_gpu: bool) -> None:
    """A process group of one (DeepSpeed wants one even on a single device)."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0"
    )
    if on_gpu:
        torch.cuda.set_device(0)
    dist.init_process_group("nccl" if on_gpu else "gloo", rank=0, world_size=1)


if __name__ == "__main__":
    main()
