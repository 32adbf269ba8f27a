"""Noisy Student self-training (Xie et al., "Self-training with Noisy Student improves ImageNet classification", CVPR 2020).

The loop (the paper's Algorithm 1):

0. A teacher learns from the labeled images.
1. The teacher, **without noise** (eval mode: no dropout, no stochastic depth, no
   augmentation), labels the unlabeled images: soft labels (its softmax, the paper's
   default) or hard ones (the argmax).
2. Confident images are kept (maximum probability >= ``threshold``; the paper's 0.3)
   and the classes are **balanced**: a class with more than ``per_class`` images keeps
   its most confident ones, a class with fewer duplicates its images until it has
   ``per_class`` (the paper's filtering and balancing, Sec. 3).
3. A student, equal to or larger than the teacher, learns from labeled + pseudo-labeled
   images **with noise**: RandAugment on the inputs (:mod:`nas.randaugment`,
   torchvision's ops; default 2 ops at magnitude 9), and the spec's dropout and
   stochastic depth on the model.  The student trains from scratch.
4. The student becomes the teacher; repeat from 1.

Every model here is trained by :func:`nas.train.train_and_evaluate` with the same
budget (epochs or optimizer steps), recipe, batch size and resolution, so a teacher
and its students differ only in data, targets and noise.  One normalization (that of
the source's whole train split) serves every dataset involved
(:meth:`nas.data.Dataset.with_train`).

:class:`NoisyStudent` runs the rounds resumably under one directory::

    DIR/config.json                 what the run was asked (a rerun must ask the same)
    DIR/labeled.json                the labeled draw (indices into the source's train split)
    DIR/round-0/                    the teacher: weights.pt, spec.json, metrics.json
    DIR/round-K/pseudo.pt           round K's pseudo-labels (indices into the unlabeled pool, targets)
    DIR/round-K/                    round K's student: weights.pt, spec.json, metrics.json
    DIR/summary.json                {"teacher": {...}, "rounds": [{"round": 1, "student_accuracy": ...}, ...]}

A round whose ``metrics.json`` exists is done and is read back, not rerun; every file
is written atomically, so an interrupted run resumes at the round it was in.
"""
from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .atomic import atomic_write_bytes, atomic_write_text
from .build import build_model
from .data.dataset import Dataset
from .data.sampling import stratified_indices
from .spec import Spec
from .train import TrainResult, evaluate_at, input_channels, train_and_evaluate

__all__ = ["PSEUDO_LABELS", "NoiseSettings", "StudentConfig", "NoisyStudent", "pseudo_label", "select_pseudo_labels",
           "split_labeled", "conform_images", "NoisyStudentError"]

PSEUDO_LABELS = ("soft", "hard")


class NoisyStudentError(ValueError):
    """A request that cannot be run (one user-facing line)."""


@dataclass(frozen=True)
class NoiseSettings:
    """The student's noise: RandAugment on the inputs, the spec's dropout and stochastic depth on the model."""

    randaugment: bool = True
    num_ops: int = 2
    magnitude: int = 9
    model_noise: bool = True  # the spec's dropout and drop_connect_rate; off sets both to 0

    @classmethod
    def off(cls) -> "NoiseSettings":
        return cls(randaugment=False, model_noise=False)

    def student_spec(self, spec: Spec) -> Spec:
        return spec if self.model_noise else spec.replace(dropout=0.0, drop_connect_rate=0.0)


@dataclass(frozen=True)
class StudentConfig:
    """Everything one Noisy Student run is asked (recorded in ``config.json``)."""

    labeled: int
    rounds: int = 3
    pseudo: str = "soft"
    threshold: float = 0.3
    per_class: int | None = None  # None: the mean count of the confident classes
    noise: NoiseSettings = field(default_factory=NoiseSettings)
    epochs: float | None = 1.0
    steps: int | None = None
    resolution: int = 32
    batch_size: int = 64
    recipe: str = "adamw"
    lr: float | None = None
    seed: int = 0
    unlabeled: str | None = None  # the source of the unlabeled images; None: the rest of the train split

    def __post_init__(self):
        if self.pseudo not in PSEUDO_LABELS:
            raise NoisyStudentError(f"pseudo labels must be soft or hard, got {self.pseudo!r}")
        if not 0.0 <= self.threshold < 1.0:
            raise NoisyStudentError(f"the confidence threshold must be in [0, 1), got {self.threshold}")
        if self.rounds < 1:
            raise NoisyStudentError(f"rounds must be >= 1, got {self.rounds}")

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- the pieces


def split_labeled(dataset: Dataset, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(labeled, rest): a seeded stratified draw of ``n`` train images and the others, as sorted indices."""
    if not 1 <= n < dataset.num_train:
        raise NoisyStudentError(f"--labeled must be between 1 and {dataset.num_train - 1} (the train split of "
                                f"{dataset.name} has {dataset.num_train} images), got {n}")
    labeled = stratified_indices(dataset.train_y.numpy(), n, seed)
    mask = np.ones(dataset.num_train, dtype=bool)
    mask[labeled] = False
    return labeled, np.flatnonzero(mask).astype(np.int64)


def conform_images(x: torch.Tensor, like: Dataset) -> torch.Tensor:
    """uint8 images ``x`` with ``like``'s channels (grey averaged or repeated) and native size (bilinear)."""
    c, h, w = like.train_x.shape[1:]
    out = x.float()
    if out.shape[1] != c:  # through grey: averaged, then repeated
        out = out.mean(dim=1, keepdim=True).expand(-1, c, -1, -1)
    if tuple(out.shape[2:]) != (h, w):
        out = torch.cat([F.interpolate(out[i:i + 1024], size=(h, w), mode="bilinear", align_corners=False,
                                       antialias=True) for i in range(0, out.shape[0], 1024)])
    return out.round_().clamp_(0, 255).to(torch.uint8).contiguous()


@torch.no_grad()
def pseudo_label(model: torch.nn.Module, images: Dataset, resolution: int, *, batch_size: int = 256,
                 progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """The un-noised model's class probabilities [N, classes] for every train image of ``images``.

    Eval mode: dropout and stochastic depth off, BatchNorm on its running statistics; no
    augmentation, the images resized as the held-out split is.
    """
    model.eval()
    channels = input_channels(model)
    loader = images.loader("train", batch_size=batch_size, resolution=resolution, channels=channels, shuffle=False)
    out = []
    for x, _ in loader:
        out.append(torch.softmax(model(x).float(), dim=1))
        if progress is not None:
            progress(int(x.shape[0]))
    return torch.cat(out) if out else torch.empty(0, images.num_classes)


def select_pseudo_labels(probs: torch.Tensor, *, threshold: float = 0.3, per_class: int | None = None,
                         pseudo: str = "soft", seed: int = 0) -> tuple[np.ndarray, torch.Tensor, dict]:
    """Filter and balance (the paper's Sec. 3): (image indices, targets [n, classes], counts).

    Images whose top probability is below ``threshold`` are dropped.  Each class (by the
    argmax) is then brought to ``per_class`` images (default: the mean count over the
    classes that kept any): the most confident ones when it has more, its images repeated
    (all of them as often as fits, the remainder a seeded random choice) when it has fewer.
    Targets are the probabilities (``soft``) or one-hot argmaxes (``hard``).  An index may
    appear several times (duplicates).
    """
    if pseudo not in PSEUDO_LABELS:
        raise ValueError(f"pseudo must be soft or hard, got {pseudo!r}")
    conf, label = probs.max(dim=1)
    keep = np.flatnonzero((conf >= threshold).numpy())
    classes = probs.shape[1]
    by_class = [keep[label[keep].numpy() == c] for c in range(classes)]
    present = [len(ix) for ix in by_class if len(ix)]
    if per_class is None:
        per_class = int(round(sum(present) / len(present))) if present else 0
    rng = np.random.default_rng(seed)
    chosen = []
    for ix in by_class:
        if len(ix) == 0:
            continue
        if len(ix) >= per_class:
            order = np.argsort(-conf[ix].numpy(), kind="stable")
            chosen.append(np.sort(ix[order[:per_class]]))
        else:
            reps, rest = divmod(per_class, len(ix))
            chosen.append(np.concatenate([np.tile(ix, reps), rng.choice(ix, rest, replace=False)]))
    index = np.concatenate(chosen).astype(np.int64) if chosen else np.empty(0, dtype=np.int64)
    targets = probs[torch.from_numpy(index)]
    if pseudo == "hard":
        targets = F.one_hot(targets.argmax(dim=1), classes).float()
    counts = {"unlabeled": int(probs.shape[0]), "confident": int(len(keep)), "per_class": int(per_class),
              "pseudo_labeled": int(len(index)), "distinct": int(len(np.unique(index))),
              "confident_per_class": [int(len(ix)) for ix in by_class]}
    return index, targets.float().contiguous(), counts


# ---------------------------------------------------------------- the loop


def _state_bytes(model: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


class NoisyStudent:
    """A resumable Noisy Student run under ``directory`` (the module docstring lists its files).

    ``source`` is the labeled data set (train split: the labeled draw and, unless
    ``unlabeled_images`` is given, the unlabeled pool; held-out split: the evaluation);
    ``teacher`` and ``student`` are specs (the student defaults to the teacher's).
    """

    def __init__(self, directory: Path, source: Dataset, teacher: Spec, config: StudentConfig, *,
                 student: Spec | None = None, unlabeled_images: torch.Tensor | None = None,
                 unlabeled_name: str | None = None, teacher_weights: dict | None = None, progress: bool = False, log: Callable[[str], None] | None = None, device=None):
        self.dir = Path(directory)
        self.config = config
        self.teacher_spec = teacher.replace(num_classes=source.num_classes)
        self.student_spec = (student or teacher).replace(num_classes=source.num_classes)
        self.teacher_weights = teacher_weights
        self.progress = progress
        self.log = log or (lambda text: None)
        self.device = device
        labeled, rest = split_labeled(source, config.labeled, config.seed)
        self.labeled_index = labeled
        self.labeled = source.with_train(source.train_x[labeled], source.train_y[labeled],
                                         name=f"{source.name} ({len(labeled)} labeled)")
        pool = source.train_x[rest] if unlabeled_images is None else conform_images(unlabeled_images, source)
        if pool.shape[0] == 0:
            raise NoisyStudentError("there are no unlabeled images")
        self.pool = source.with_train(pool, torch.zeros(pool.shape[0], dtype=torch.int64),
                                      name=f"{unlabeled_name or source.name} (unlabeled)")
        self.source = source

    # -- files --------------------------------------------------------- #

    def _round_dir(self, k: int) -> Path:
        return self.dir / f"round-{k}"

    def check_directory(self) -> None:
        """Refuse to resume a directory made for another request (NoisyStudentError); the round count may differ."""
        path = self.dir / "config.json"
        if path.exists():
            old, new = json.loads(path.read_text()), self._config_doc()
            for doc in (old, new):  # more (or fewer) rounds extend (or read back) the same run
                doc.get("config", {}).pop("rounds", None)
            if any(old.get(k) != new[k] for k in ("config", "teacher", "student", "data")):
                raise NoisyStudentError(f"{self.dir} holds a run with other settings (its config.json); "
                                        "use another --output or the same settings to resume")

    def _config_doc(self) -> dict:
        return {"format": "nas-noisy-student", "version": 1, "config": self.config.to_dict(),
                "data": self.source.name, "teacher": self.teacher_spec.fingerprint(),
                "student": self.student_spec.fingerprint(), "teacher_from_weights": self.teacher_weights is not None}

    def _write_model(self, k: int, model, spec: Spec, metrics: dict) -> None:
        d = self._round_dir(k)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(d / "weights.pt", _state_bytes(model))
        trained = spec.replace(resolution=self.config.resolution,
                               provenance={**spec.provenance, "trained_on": self.source.name,
                                           "noisy_student_round": k})
        atomic_write_text(d / "spec.json", trained.to_json())
        atomic_write_text(d / "metrics.json", json.dumps(metrics, indent=2) + "\n")  # last: marks the round done

    def _load_model(self, k: int, spec: Spec) -> torch.nn.Module:
        model = build_model(spec.replace(resolution=self.config.resolution))
        state = torch.load(self._round_dir(k) / "weights.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return model

    # -- training ------------------------------------------------------- #

    def _train(self, spec: Spec, data: Dataset, *, noise: NoiseSettings | None, init: dict | None = None,
               seed: int) -> TrainResult:
        c = self.config
        ra = (noise.num_ops, noise.magnitude) if noise is not None and noise.randaugment else None
        return train_and_evaluate(spec, data, epochs=c.epochs or 1, steps=c.steps, resolution=c.resolution,
                                  batch_size=c.batch_size, recipe=c.recipe, lr=c.lr, seed=seed,
                                  progress=self.progress, return_model=True, augment=False, device=self.device,
                                  randaugment=ra, init=init, evaluate_each_epoch=False)

    def _teacher(self) -> tuple[torch.nn.Module, dict]:
        """Round 0: the teacher, trained on the labeled images (or given), and its metrics."""
        c = self.config
        d = self._round_dir(0)
        if (d / "metrics.json").exists():
            return self._load_model(0, self.teacher_spec), json.loads((d / "metrics.json").read_text())
        t0 = time.perf_counter()
        if self.teacher_weights is not None:  # given: evaluated only (a zero-step fine-tune is an evaluation)
            model = build_model(self.teacher_spec.replace(resolution=c.resolution))
            model.load_state_dict(self.teacher_weights)
            acc, loss = evaluate_at(model, self.labeled, c.resolution, batch_size=c.batch_size, seed=c.seed,
                                    bn_batches=0)
            metrics = {"round": 0, "accuracy": acc, "loss": loss, "given": True}
        else:
            self.log(f"round 0: teacher on {self.labeled.num_train} labeled images")
            r = self._train(self.teacher_spec, self.labeled, noise=None, seed=c.seed)
            if r.failed:
                raise RuntimeError(f"the teacher's training failed: {r.reason}")
            model = r.model
            metrics = {"round": 0, "accuracy": r.accuracy, "loss": r.loss, "given": False, "train": r.to_dict()}
        metrics["seconds"] = time.perf_counter() - t0
        self._write_model(0, model, self.teacher_spec, metrics)
        return model, metrics

    def _pseudo(self, k: int, teacher: torch.nn.Module) -> tuple[np.ndarray, torch.Tensor, dict]:
        c = self.config
        path = self._round_dir(k) / "pseudo.pt"
        if path.exists():
            saved = torch.load(path, map_location="cpu", weights_only=True)
            return saved["index"].numpy(), saved["targets"], json.loads(saved["counts"])
        probs = pseudo_label(teacher.to(self.device or "cpu"), self.pool, c.resolution)
        teacher.to("cpu")
        index, targets, counts = select_pseudo_labels(probs, threshold=c.threshold, per_class=c.per_class,
                                                      pseudo=c.pseudo, seed=c.seed + k)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save({"index": torch.from_numpy(index), "targets": targets, "counts": json.dumps(counts)}, buf)
        atomic_write_bytes(path, buf.getvalue())
        return index, targets, counts

    def _student_data(self, index: np.ndarray, targets: torch.Tensor) -> Dataset:
        lab = self.labeled
        onehot = F.one_hot(lab.train_y, lab.num_classes).float()
        x = torch.cat([lab.train_x, self.pool.train_x[torch.from_numpy(index)]])
        soft = torch.cat([onehot, targets])
        return self.source.with_train(x, soft.argmax(dim=1), train_soft=soft.contiguous(),
                                      name=f"{self.source.name} (labeled + pseudo-labeled)")

    def run(self) -> dict:
        """Every round not yet done; the summary (also written to ``DIR/summary.json``)."""
        c = self.config
        self.check_directory()
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.dir / "config.json", json.dumps(self._config_doc(), indent=2) + "\n")
        atomic_write_text(self.dir / "labeled.json", json.dumps({"indices": self.labeled_index.tolist()}) + "\n")
        teacher, t_metrics = self._teacher()
        summary = {"format": "nas-noisy-student-summary", "version": 1, "config": c.to_dict(),
                   "teacher": {"accuracy": t_metrics["accuracy"], "spec": self.teacher_spec.name,
                               "seconds": t_metrics["seconds"]}, "rounds": []}
        self._write_summary(summary)
        spec = self.noise_spec()
        for k in range(1, c.rounds + 1):
            d = self._round_dir(k)
            if (d / "metrics.json").exists():
                metrics = json.loads((d / "metrics.json").read_text())
                teacher = self._load_model(k, spec)
            else:
                t0 = time.perf_counter()
                index, targets, counts = self._pseudo(k, teacher)
                self.log(f"round {k}: {counts['pseudo_labeled']} pseudo-labeled images "
                         f"({counts['confident']} of {counts['unlabeled']} confident, {counts['per_class']} per class)")
                data = self._student_data(index, targets)
                r = self._train(spec, data, noise=c.noise, seed=c.seed + 1000 * k)
                if r.failed:
                    raise RuntimeError(f"round {k}'s student training failed: {r.reason}")
                metrics = {"round": k, "student_accuracy": r.accuracy, "loss": r.loss,
                           "pseudo_labeled": counts["pseudo_labeled"], "counts": counts,
                           "train_images": data.num_train, "seconds": time.perf_counter() - t0, "train": r.to_dict()}
                self._write_model(k, r.model, spec, metrics)
                teacher = r.model
                left = c.rounds - k
                self.log(f"round {k} of {c.rounds}: student {r.accuracy:.4f} in {metrics['seconds']:.0f} s"
                         + (f"; ETA {left * metrics['seconds'] / 60:.1f} min for {left} more" if left else ""))
            summary["rounds"].append({"round": k, "student_accuracy": metrics["student_accuracy"],
                                      "pseudo_labeled": metrics["pseudo_labeled"], "seconds": metrics["seconds"]})
            self._write_summary(summary)
        return summary

    def noise_spec(self) -> Spec:
        """The student's spec with its model noise on or off."""
        return self.config.noise.student_spec(self.student_spec)

    def _write_summary(self, summary: dict) -> None:
        atomic_write_text(self.dir / "summary.json", json.dumps(summary, indent=2) + "\n")
