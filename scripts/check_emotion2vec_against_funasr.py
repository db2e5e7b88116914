"""Compare our emotion2vec (``opens2s.audio.emotion2vec``) with FunASR's own on the same directory
(a developer check, not a test: FunASR is never a project dependency).

FunASR runs in a scratch venv of its own, so that it can never change our torch:

    python3.11 -m venv /tmp/e2v && /tmp/e2v/bin/pip install torch==2.13.0 funasr==1.4.16
    .venv/bin/python scripts/check_emotion2vec_against_funasr.py --funasr-python /tmp/e2v/bin/python \
        [--model /path/to/emotion2vec_plus_base]

Without ``--model`` it writes the tests' tiny random emotion2vec (tests/emotion2vec_tiny.py) and
two variants that take the config branches the tiny one does not (``VARIANTS``; their model.pt is
drawn by FunASR's own ``Emotion2vec`` and saved without its decoder, as released). Our side loads
each directory strictly and scores a few waves of different lengths; FunASR's side
loads it with ``AutoModel(model=<local dir>, disable_update=True)`` (a local path resolved through
configuration.json: no hub call) and runs ``generate`` (its utterance-level inference: labels, scores, pooled ``feats``) and, for
the logits, ``extract_features`` + mean + ``proj`` of the same Emotion2vec instance. Last line:
one JSON object with the largest absolute differences per directory, and the tensor names
FunASR's model and model.pt do not share (expected: only FunASR's unused decoder).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SECONDS = (0.5, 1.0, 2.3, 3.7)


def waves() -> list[np.ndarray]:
    """Noise-and-tone waves at 16 kHz, of different lengths (the same on both sides)."""
    rng = np.random.default_rng(7)
    out = []
    for i, s in enumerate(SECONDS):
        t = np.arange(int(s * 16000)) / 16000
        tone = 0.3 * np.sin(2 * np.pi * (120 + 60 * i) * t) * (1 + 0.5 * np.sin(2 * np.pi * 2 * t))
        out.append((tone + 0.05 * rng.standard_normal(t.size)).astype(np.float32))
    return out


VARIANTS = {
    # the branches the tests' tiny model does not take: GroupNorm conv stack, a LayerNorm before
    # the position convs with an odd kernel, ALiBi scales per layer over fewer heads than the
    # attention (3 of 4: the non-power-of-two slopes), no extra tokens, no wave normalisation
    "alt": {
        "num_heads": 4,
        "normalize": False,
        "extractor_mode": "default",
        "modalities.audio": {
            "extractor_mode": "default",
            "conv_pos_pre_ln": True,
            "conv_pos_width": 15,
            "conv_pos_depth": 3,
            "learned_alibi_scale_per_layer": True,
            "num_alibi_heads": 3,
            "num_extra_tokens": 0,
        },
    },
    # no ALiBi at all, LayerNorms without weights, one extra token
    "plain": {
        "norm_affine": False,
        "modalities.audio": {"use_alibi_encoder": False, "num_extra_tokens": 1},
    },
}


def write_variant(out: Path, changes: dict) -> Path:
    """The tiny config with ``changes``; no model.pt (FunASR's side draws its own)."""
    import yaml
    from emotion2vec_tiny import config, configuration, write_tiny_emotion2vec

    write_tiny_emotion2vec(out)
    (out / "model.pt").unlink()
    cfg = config()
    for key, value in changes.items():
        if key == "modalities.audio":
            cfg["model_conf"]["modalities"]["audio"].update(value)
        else:
            cfg["model_conf"][key] = value
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    (out / "configuration.json").write_text(json.dumps(configuration()), encoding="utf-8")
    return out


def funasr_side(model_dir: str, out: str) -> None:
    """Run in the scratch venv: FunASR's outputs for ``waves()`` into ``out`` (npz). A directory
    without model.pt first gets one from FunASR's own Emotion2vec with random weights, saved as
    released (no decoder tensors)."""
    import torch
    from funasr import AutoModel

    ckpt = Path(model_dir) / "model.pt"
    if not ckpt.exists():
        from funasr.models.emotion2vec.model import Emotion2vec
        from omegaconf import OmegaConf

        conf = OmegaConf.load(Path(model_dir) / "config.yaml")
        labels = (Path(model_dir) / "tokens.txt").read_text(encoding="utf-8").split()
        net = Emotion2vec(model_conf=conf.model_conf, vocab_size=len(labels))
        g = torch.Generator().manual_seed(3)
        state = {}
        for name, value in net.state_dict().items():
            if ".decoder." in name:
                continue
            noise = torch.randn(value.shape, generator=g)
            fan_in = value[0].numel() if value.dim() > 1 else 10
            state[name] = value + noise / fan_in**0.5 if value.dim() > 1 else value + 0.1 * noise
        torch.save({"model": state}, ckpt)
    auto = AutoModel(model=model_dir, disable_update=True, device="cpu", disable_pbar=True)
    net = auto.model
    saved = set(torch.load(ckpt, weights_only=True)["model"])
    theirs = set(net.state_dict())
    results = {
        "ckpt_names_funasr_lacks": np.asarray(sorted(saved - theirs), dtype=str),
        "funasr_names_ckpt_lacks": np.asarray(sorted(theirs - saved), dtype=str),
    }
    for i, wave in enumerate(waves()):
        res = auto.generate(wave, granularity="utterance", extract_embedding=True)[0]
        results[f"probs{i}"] = np.asarray(res["scores"], dtype=np.float32)
        results[f"feats{i}"] = np.asarray(res["feats"], dtype=np.float32)
        with torch.no_grad():
            source = torch.from_numpy(wave)
            if net.cfg.normalize:
                source = torch.nn.functional.layer_norm(source, source.shape)
            x = net.extract_features(source.view(1, -1), padding_mask=None)["x"]
            results[f"logits{i}"] = net.proj(x.mean(dim=1))[0].numpy()
        results[f"labels{i}"] = np.asarray(res["labels"])
    np.savez(out, **results)


def compare(funasr_python: str, model_dir: str, tmp: Path) -> dict:
    """Run FunASR's side on ``model_dir`` and ours; the largest differences."""
    from opens2s.audio.emotion2vec import load_emotion2vec

    out = tmp / "funasr.npz"
    subprocess.run(
        [funasr_python, __file__, "--funasr-side", model_dir, str(out)], check=True, cwd=tmp
    )
    theirs = dict(np.load(out))
    ours = load_emotion2vec(model_dir)
    worst = {"logits": 0.0, "probs": 0.0, "embedding": 0.0}
    scale = {"logits": 0.0, "embedding": 0.0}
    same_labels = same_top = True
    for i, wave in enumerate(waves()):
        embedding, logits = ours.utterance(wave)
        probs, labels = ours.recognize(wave)
        same_labels &= labels == [str(x) for x in theirs[f"labels{i}"]]
        same_top &= int(np.argmax(probs)) == int(np.argmax(theirs[f"probs{i}"]))
        for key, mine in (("logits", logits), ("probs", probs), ("embedding", embedding)):
            other = theirs[f"feats{i}" if key == "embedding" else f"{key}{i}"]
            worst[key] = max(worst[key], float(np.abs(mine - other).max()))
            if key in scale:
                scale[key] = max(scale[key], float(np.abs(other).max()))
    lacks = sorted(
        {
            n.split(".decoder.")[0] + ".decoder.*" if ".decoder." in n else n
            for n in theirs["funasr_names_ckpt_lacks"].tolist()
        }
    )
    return {
        "max_abs_diff": worst,
        "max_abs_value": scale,
        "same_labels": bool(same_labels),
        "same_top_label": bool(same_top),
        "ckpt_names_funasr_lacks": theirs["ckpt_names_funasr_lacks"].tolist(),
        "funasr_names_ckpt_lacks": lacks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--funasr-python", help="python of a venv with funasr and torch")
    parser.add_argument("--model", help="an emotion2vec directory (default: the tests' tiny one)")
    parser.add_argument("--funasr-side", nargs=2, metavar=("MODEL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.funasr_side:
        funasr_side(*args.funasr_side)
        return
    if not args.funasr_python:
        parser.error("--funasr-python is required")

    root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(root / "platform"), str(root / "tests")]
    report = {"waves_seconds": list(SECONDS)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.model is not None:
            report[args.model] = compare(args.funasr_python, args.model, tmp)
        else:
            from emotion2vec_tiny import write_tiny_emotion2vec

            tiny = write_tiny_emotion2vec(tmp / "tiny", seed=0)
            report["tiny"] = compare(args.funasr_python, str(tiny), tmp)
            for name, changes in VARIANTS.items():
                path = write_variant(tmp / name, changes)
                report[name] = compare(args.funasr_python, str(path), tmp)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
