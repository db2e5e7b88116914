"""Speech tokenizers: audio -> discrete unit ids for the TTS LM.

The CPU default, :class:`MelKMeansUnits`, stacks consecutive 10 ms log-mel frames (4 for 25
units/s, 8 for 12.5 units/s), normalises each dimension, and quantizes the stacked vector with
k-means. Fitting streams over any number of files or arrays with bounded memory: features go to
a float16 memory-mapped scratch file and each Lloyd pass reads it in batches, keeping only the
K x D running sums in memory. The codebook is saved as ``.npz`` (``allow_pickle=False``) or
``.safetensors``; nothing is pickled.

:class:`GLM4VoiceTokenizer` (:mod:`opens2s.audio.glm4voice_tokenizer`) is the GLM-4-Voice tokenizer
(16,384 units at 12.5/s) from a local directory.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from opens2s.audio.features import SpeechMelSpec, speech_mel
from opens2s.audio.io import load_audio, mono_wave, resample
from opens2s.audio.mel_decoder import (
    DEFAULT_HIDDEN,
    DEFAULT_LAYERS,
    DEFAULT_STEPS,
    UnitMelDecoder,
    train_decoder,
)
from opens2s.config.audio import AudioSection

_DEFAULTS = AudioSection()
FORMAT_VERSION = 1


class UnitError(ValueError):
    """A tokenizer that cannot be built, fitted, saved or loaded: names the input and the problem."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


@runtime_checkable
class UnitTokenizer(Protocol):
    """Audio -> unit ids at a fixed rate over a fixed vocabulary."""

    unit_rate: float
    codebook_size: int

    def encode(self, wave: np.ndarray, sr: int) -> np.ndarray:
        """Unit ids (int64) of a mono wave."""
        ...

    def save(self, path: str | Path) -> Path:
        """Write the tokenizer to ``path``."""
        ...

    @classmethod
    def load(cls, path: str | Path) -> UnitTokenizer:
        """Read a tokenizer written by ``save``."""
        ...


def frames_per_unit(unit_rate: float, hop: int = 160, sr: int = 16000) -> int:
    """10 ms frames stacked into one unit: 4 at 25 units/s, 8 at 12.5 units/s."""
    frames_per_second = sr / hop
    stack = frames_per_second / unit_rate
    if unit_rate <= 0 or abs(stack - round(stack)) > 1e-6:
        raise UnitError(
            "unit_rate", f"{unit_rate} units/s does not divide {frames_per_second:g} frames/s"
        )
    return int(round(stack))


WaveSource = str | Path | np.ndarray | tuple[np.ndarray, int]


class MelKMeansUnits:
    """K-means units over stacked log-mel frames (the CPU speech tokenizer).

    ``codebook_size`` units, ``unit_rate`` units per second (25 or 12.5). ``centroids`` are in the
    feature space (stacked log-mel); ``mean``/``std`` normalise each dimension before distances.
    """

    def __init__(
        self,
        codebook_size: int | None = None,
        unit_rate: float | None = None,
        spec: SpeechMelSpec | None = None,
        decoder_steps: int | None = None,
    ) -> None:
        self.codebook_size = int(codebook_size or _DEFAULTS.codebook_size)
        self.decoder_steps = (
            _DEFAULTS.unit_decoder_steps if decoder_steps is None else decoder_steps
        )
        self.unit_rate = float(unit_rate or _DEFAULTS.unit_rate)
        self.spec = spec or SpeechMelSpec(n_mels=_DEFAULTS.unit_n_mels)
        if self.codebook_size < 2:
            raise UnitError("codebook_size", f"need at least 2 units, got {self.codebook_size}")
        self.stack = frames_per_unit(self.unit_rate, self.spec.hop, self.spec.sr)
        self.dim = self.stack * self.spec.n_mels
        self.centroids: np.ndarray | None = None  # [K, D] float32, feature space
        self.mean = np.zeros(self.dim, np.float32)
        self.std = np.ones(self.dim, np.float32)
        self.fit_stats: dict[str, float] = {}
        self.decoder: UnitMelDecoder | None = None  # optional learned refinement of centroids

    # -- features ------------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        """Rate of the audio the units describe (and the vocoder produces)."""
        return self.spec.sr

    def unit_features(self, wave: np.ndarray, sr: int) -> np.ndarray:
        """Stacked log-mel vectors of a wave: ``[n_units, stack * n_mels]`` float32.

        ``n_units = ceil(seconds * unit_rate)``; the last unit is padded with silence frames.
        """
        wave = resample(mono_wave(wave, "unit tokenizer input"), sr, self.spec.sr)
        mel = speech_mel(wave, self.spec)
        n_units = max(1, math.ceil(wave.size / (self.spec.hop * self.stack)))
        need = n_units * self.stack
        if mel.shape[0] < need:
            pad = np.full(
                (need - mel.shape[0], mel.shape[1]), math.log(self.spec.floor), np.float32
            )
            mel = np.concatenate([mel, pad])
        return np.ascontiguousarray(mel[:need].reshape(n_units, self.dim))

    def units_to_mel(self, units: np.ndarray, left_context: int = 0) -> np.ndarray:
        """The log-mel frames ``units`` stand for: ``[(n - left_context) * stack, n_mels]``.

        Plain centroids, or the learned decoder's refinement when one was fitted; the first
        ``left_context`` units only serve as the decoder's context and are dropped.
        """
        cents = self._require_fitted()
        ids = np.asarray(units, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.codebook_size):
            raise UnitError(
                "units", f"ids must lie in [0, {self.codebook_size}), got {ids.min()}..{ids.max()}"
            )
        if self.decoder is not None and ids.size:
            vecs = self.decoder.decode(ids) * self.std + self.mean
        else:
            vecs = cents[ids]
        out = np.ascontiguousarray(vecs[left_context:], dtype=np.float32)
        return out.reshape(-1, self.spec.n_mels)

    def fit_decoder(
        self,
        sources: Iterable[WaveSource],
        *,
        steps: int = DEFAULT_STEPS,
        hidden: int = DEFAULT_HIDDEN,
        layers: int = DEFAULT_LAYERS,
        seed: int = 0,
        progress: Callable[[str], None] | None = None,
    ) -> MelKMeansUnits:
        """Train the learned unit -> mel decoder (see ``mel_decoder``) on audio; returns self."""
        self._require_fitted()
        pairs = []
        for src in sources:
            feats = self.unit_features(*_as_wave(src))
            pairs.append((self._assign(feats), self._normed(feats)))
        self.decoder = train_decoder(
            self._norm_centroids,
            pairs,
            steps=steps,
            hidden=hidden,
            layers=layers,
            seed=seed,
            progress=progress,
        )
        return self

    # -- encode --------------------------------------------------------------------------------

    def encode(self, wave: np.ndarray, sr: int) -> np.ndarray:
        """Unit ids (int64) of a mono wave, ``ceil(seconds * unit_rate)`` of them."""
        self._require_fitted()
        return self._assign(self.unit_features(wave, sr))

    def _assign(self, feats: np.ndarray) -> np.ndarray:
        cents = torch.from_numpy(self._norm_centroids)
        c2 = (cents * cents).sum(1)
        out = np.empty(feats.shape[0], np.int64)
        for i in range(0, feats.shape[0], 4096):
            x = torch.from_numpy((feats[i : i + 4096] - self.mean) / self.std)
            d = c2[None, :] - 2.0 * x @ cents.T
            out[i : i + 4096] = d.argmin(1).numpy()
        return out

    def _require_fitted(self) -> np.ndarray:
        if self.centroids is None:
            raise UnitError("MelKMeansUnits", "not fitted: call fit() or load a saved codebook")
        return self.centroids

    @property
    def _norm_centroids(self) -> np.ndarray:
        cents = self._require_fitted()
        return ((cents - self.mean) / self.std).astype(np.float32)

    # -- fit -----------------------------------------------------------------------------------

    def fit(
        self,
        sources: Iterable[WaveSource],
        *,
        passes: int | None = None,
        batch_units: int | None = None,
        seed: int = 0,
        progress: Callable[[str], None] | None = None,
    ) -> MelKMeansUnits:
        """Fit the codebook on files (paths), waves at 16 kHz, or ``(wave, sr)`` pairs.

        Features are written once to a float16 scratch file; then ``passes`` Lloyd passes read it
        in batches of ``batch_units`` vectors (memory: one batch plus K x D sums). Centroids start
        from k-means++ on a sample; units left empty in a pass are re-seeded from the vectors
        that are worst represented. With ``decoder_steps`` > 0 the learned unit -> mel decoder
        is trained afterwards on the same audio. Returns self.
        """
        if self.decoder_steps > 0:
            sources = list(sources)  # read twice: k-means, then the decoder
        passes = passes or _DEFAULTS.kmeans_passes
        batch_units = batch_units or _DEFAULTS.kmeans_batch_frames
        rng = np.random.default_rng(seed)
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="kmeans-") as tmp:
            store = _FeatureStore(Path(tmp) / "feats.f16", self.dim)
            for src in sources:
                store.append(self.unit_features(*_as_wave(src)))
            feats = store.finish()
            n = feats.shape[0]
            if n < self.codebook_size:
                raise UnitError(
                    "fit data",
                    f"{n} unit vectors for {self.codebook_size} units: need at least as many",
                )
            # per-dimension normalisation, from the data
            acc = np.zeros(self.dim, np.float64)
            acc2 = np.zeros(self.dim, np.float64)
            for i in range(0, n, batch_units):
                x = feats[i : i + batch_units].astype(np.float64)
                acc += x.sum(0)
                acc2 += (x * x).sum(0)
            self.mean = (acc / n).astype(np.float32)
            self.std = np.sqrt(np.maximum(acc2 / n - (acc / n) ** 2, 1e-6)).astype(np.float32)
            sample_n = min(n, 4 * self.codebook_size)
            sample_idx = np.sort(rng.choice(n, size=sample_n, replace=False))
            sample = self._normed(feats[sample_idx])
            cents = _kmeans_pp(torch.from_numpy(sample), self.codebook_size, rng)
            inertia = float("nan")
            for p in range(passes):
                sums = torch.zeros_like(cents, dtype=torch.float64)
                counts = torch.zeros(self.codebook_size, dtype=torch.float64)
                worst_d = torch.full((self.codebook_size,), -1.0)
                worst_x = torch.zeros_like(cents)
                total = 0.0
                c2 = (cents * cents).sum(1)
                for i in range(0, n, batch_units):
                    x = torch.from_numpy(self._normed(feats[i : i + batch_units]))
                    d = c2[None, :] - 2.0 * x @ cents.T
                    dmin, idx = d.min(1)
                    dist = dmin + (x * x).sum(1)
                    total += float(dist.sum())
                    sums.index_add_(0, idx, x.double())
                    counts.index_add_(0, idx, torch.ones_like(idx, dtype=torch.float64))
                    # candidates for re-seeding empty units: the worst-fit vectors of this batch
                    k = min(self.codebook_size, x.shape[0])
                    top_d, top_i = dist.topk(k)
                    better = top_d > worst_d
                    worst_d = torch.where(better, top_d, worst_d)
                    worst_x[better] = x[top_i[better]]
                inertia = total / n
                empty = counts == 0
                new = (sums / counts.clamp(min=1)[:, None]).float()
                new[empty] = worst_x[empty]
                cents = new
                if progress:
                    progress(
                        f"k-means pass {p + 1}/{passes}: inertia {inertia:.3f}, "
                        f"{int(empty.sum())} empty units re-seeded"
                    )
            self.centroids = (cents.numpy() * self.std + self.mean).astype(np.float32)
        self.fit_stats = {
            "vectors": float(n),
            "seconds_of_audio": n / self.unit_rate,
            "passes": float(passes),
            "inertia_per_vector": inertia,
            "fit_seconds": time.monotonic() - t0,
        }
        if self.decoder_steps > 0:
            self.fit_decoder(sources, steps=self.decoder_steps, seed=seed, progress=progress)
        return self

    def _normed(self, x: np.ndarray) -> np.ndarray:
        return ((x.astype(np.float32) - self.mean) / self.std).astype(np.float32)

    # -- save / load ---------------------------------------------------------------------------

    def _meta(self) -> dict[str, str]:
        return {
            "kind": "mel_kmeans",
            "version": str(FORMAT_VERSION),
            "codebook_size": str(self.codebook_size),
            "unit_rate": repr(self.unit_rate),
            "spec": json.dumps(self.spec.to_dict()),
            "fit_stats": json.dumps(self.fit_stats),
        }

    def save(self, path: str | Path) -> Path:
        """Write the codebook to ``.npz`` or ``.safetensors`` (by suffix), no pickle."""
        cents = self._require_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"centroids": cents, "mean": self.mean, "std": self.std}
        if self.decoder is not None:
            arrays.update(self.decoder.state_arrays())
        if path.suffix == ".safetensors":
            from safetensors.numpy import save_file

            save_file(arrays, str(path), metadata=self._meta())
        elif path.suffix == ".npz":
            meta = np.frombuffer(json.dumps(self._meta()).encode(), dtype=np.uint8)
            with open(path, "wb") as f:
                np.savez(f, meta=meta, **arrays)
        else:
            raise UnitError(str(path), "unknown suffix, expected .npz or .safetensors")
        return path

    @classmethod
    def load(cls, path: str | Path) -> MelKMeansUnits:
        """Read a codebook written by :meth:`save` (``.npz`` or ``.safetensors``)."""
        arrays, meta = _read_codebook(Path(path))
        if meta.get("kind") != "mel_kmeans":
            raise UnitError(str(path), f"not a mel k-means codebook (kind {meta.get('kind')!r})")
        spec = SpeechMelSpec(**json.loads(meta["spec"]))
        tok = cls(int(meta["codebook_size"]), float(meta["unit_rate"]), spec)
        cents = arrays["centroids"].astype(np.float32)
        if cents.shape != (tok.codebook_size, tok.dim):
            raise UnitError(
                str(path),
                f"centroids have shape {cents.shape}, expected {(tok.codebook_size, tok.dim)}",
            )
        tok.centroids = cents
        tok.mean = arrays["mean"].astype(np.float32)
        tok.std = arrays["std"].astype(np.float32)
        tok.fit_stats = json.loads(meta.get("fit_stats", "{}"))
        dec = {k: v for k, v in arrays.items() if k.startswith("decoder.")}
        if dec:
            try:
                tok.decoder = UnitMelDecoder.from_arrays(tok._norm_centroids, dec)
            except (KeyError, RuntimeError) as e:
                raise UnitError(
                    str(path), f"unit decoder weights do not fit the codebook: {e}"
                ) from e
        return tok


def _read_codebook(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    if not path.is_file():
        raise UnitError(str(path), "codebook file does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                meta = dict(f.metadata() or {})
                arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        else:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (OSError, ValueError, KeyError) as e:
        raise UnitError(str(path), f"not a readable codebook file: {e}") from e
    for key in ("centroids", "mean", "std"):
        if key not in arrays:
            raise UnitError(str(path), f"codebook file lacks {key!r}")
    if "kind" not in meta:
        raise UnitError(str(path), "codebook file lacks its metadata")
    return arrays, meta


class _FeatureStore:
    """Append-only float16 matrix on disk, read back as a memory map."""

    def __init__(self, path: Path, dim: int) -> None:
        self.path, self.dim, self.rows = path, dim, 0
        self._f = open(path, "wb")  # noqa: SIM115 - closed in finish()

    def append(self, x: np.ndarray) -> None:
        self._f.write(np.ascontiguousarray(x, dtype=np.float16).tobytes())
        self.rows += x.shape[0]

    def finish(self) -> np.ndarray:
        self._f.close()
        if self.rows == 0:
            raise UnitError("fit data", "no audio given to fit on")
        return np.memmap(self.path, dtype=np.float16, mode="r", shape=(self.rows, self.dim))


def _as_wave(src: WaveSource) -> tuple[np.ndarray, int]:
    if isinstance(src, str | Path):
        return load_audio(src, 16000), 16000
    if isinstance(src, tuple):
        return np.asarray(src[0], np.float32), int(src[1])
    return np.asarray(src, np.float32), 16000


def _kmeans_pp(x: torch.Tensor, k: int, rng: np.random.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) with a few candidates per step."""
    n = x.shape[0]
    gen = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
    x2 = (x * x).sum(1)
    cents = torch.empty(k, x.shape[1])
    first = int(torch.randint(n, (1,), generator=gen))
    cents[0] = x[first]
    d = (x2 - 2 * x @ x[first] + x2[first]).clamp(min=0)
    # greedy candidates sharpen small codebooks; for large ones plain k-means++ is fast enough
    trials = 2 + int(math.log(k)) if k <= 512 else 1
    for j in range(1, k):
        probs = d / d.sum() if float(d.sum()) > 0 else torch.full((n,), 1.0 / n)
        cand = torch.multinomial(probs, trials, replacement=True, generator=gen)
        dc = (x2[None, :] - 2 * x[cand] @ x.T + x2[cand][:, None]).clamp(min=0)
        best = int(torch.minimum(d[None, :], dc).sum(1).argmin())
        cents[j] = x[cand[best]]
        d = torch.minimum(d, dc[best])
    return cents


def load_unit_tokenizer(path: str | Path) -> UnitTokenizer:
    """Open a saved tokenizer: a k-means codebook (.npz/.safetensors) or a GLM-4-Voice pointer/dir."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".json":
        from opens2s.audio.glm4voice_tokenizer import GLM4VoiceUnits

        return GLM4VoiceUnits.load(path)
    return MelKMeansUnits.load(path)


def build_unit_tokenizer(cfg: AudioSection | None = None) -> UnitTokenizer:
    """An unfitted k-means tokenizer, or the GLM-4-Voice tokenizer, as the config says."""
    cfg = cfg or _DEFAULTS
    if cfg.unit_tokenizer == "glm4voice":
        if not cfg.glm4voice_tokenizer_path:
            raise UnitError(
                "audio.glm4voice_tokenizer_path", "unit_tokenizer is glm4voice but no path is set"
            )
        from opens2s.audio.glm4voice_tokenizer import GLM4VoiceUnits

        return GLM4VoiceUnits(cfg.glm4voice_tokenizer_path)
    return MelKMeansUnits(
        cfg.codebook_size,
        cfg.unit_rate,
        SpeechMelSpec(n_mels=cfg.unit_n_mels),
        decoder_steps=cfg.unit_decoder_steps,
    )


def __getattr__(name: str):
    """``GLM4VoiceTokenizer`` / ``GLM4VoiceUnits`` live in :mod:`glm4voice_tokenizer`, which needs
    ``UnitError`` from this module: resolved on first use, so either module may be imported first."""
    if name in ("GLM4VoiceTokenizer", "GLM4VoiceUnits"):
        from opens2s.audio.glm4voice_tokenizer import GLM4VoiceUnits

        return GLM4VoiceUnits
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
