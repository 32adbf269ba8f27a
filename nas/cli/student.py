"""``nas-student TEACHER_SPEC --labeled N --output DIR [...]``: Noisy Student self-training (:mod:`nas.noisy_student`).

Round 0 trains the teacher on ``--labeled`` images of the train split; every round
the un-noised teacher pseudo-labels the unlabeled images (the rest of the split, or
``--unlabeled DATA``), confident ones are kept and balanced, and a noised student
learns from labeled + pseudo-labeled images and becomes the next teacher.  Every
model is trained with ``nas-train``'s flags; rounds resume; ``DIR/summary.json``
holds the accuracies; each ``DIR/round-K/weights.pt`` exports with
``nas-export DIR/round-K/spec.json --weights DIR/round-K/weights.pt``.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..presets import load_spec
from ..spec import MAX_RESOLUTION, SpecError, min_resolution, total_stride
from . import ArgumentParser, RuntimeFailure, UsageError, command, finite_float, load_data, positive_int
from .train_args import add_training_arguments


def parser() -> ArgumentParser:
    ap = ArgumentParser(prog="nas-student", description="Noisy Student self-training: teacher, pseudo-labels, "
                                                        "noised students, round after round.")
    ap.add_argument("teacher", metavar="TEACHER_SPEC", help="the teacher: a preset name, a JSON file or string")
    ap.add_argument("--data", default="sample", help="labeled source (as nas-train's --data; default sample)")
    ap.add_argument("--labeled", type=positive_int("--labeled"), required=True,
                    help="labeled images: a seeded stratified draw from the train split")
    ap.add_argument("--unlabeled", metavar="DATA", help="unlabeled images from this source's train split (labels "
                                                        "ignored; default: the rest of --data's train split)")
    ap.add_argument("--rounds", type=positive_int("--rounds"), default=3, help="student rounds (default 3)")
    ap.add_argument("--student", metavar="SPEC", help="the student's spec (default: the teacher's)")
    ap.add_argument("--student-scale", type=finite_float("--student-scale", lo=0.0), metavar="PHI",
                    help="scale the student by the compound rule (EfficientNet's alpha, beta, gamma) with this phi "
                         "(depth and width; training resolution stays --resolution)")
    ap.add_argument("--pseudo", choices=("soft", "hard"), default="soft",
                    help="soft (the teacher's probabilities; the paper's default) or hard (its argmax) labels")
    ap.add_argument("--threshold", type=finite_float("--threshold", lo=0.0), default=0.3,
                    help="keep pseudo-labeled images whose top probability is at least this (default 0.3, the paper's)")
    ap.add_argument("--per-class", type=positive_int("--per-class"),
                    help="balance every class to this many pseudo-labeled images (default: the mean count)")
    noise = ap.add_argument_group("the student's noise")
    noise.add_argument("--no-noise", action="store_true", help="train students without any noise (the control)")
    noise.add_argument("--no-randaugment", action="store_true", help="no RandAugment on the inputs")
    noise.add_argument("--no-model-noise", action="store_true", help="dropout and stochastic depth set to 0")
    noise.add_argument("--randaugment-ops", type=positive_int("--randaugment-ops"), default=2, help="default 2")
    noise.add_argument("--randaugment-magnitude", type=positive_int("--randaugment-magnitude", minimum=0), default=9,
                       help="0..30 (default 9, torchvision's)")
    ap.add_argument("--teacher-weights", metavar="W.pt", help="a trained teacher (nas-train --output's weights.pt) "
                                                              "instead of training round 0")
    add_training_arguments(ap, default_resolution=32)
    ap.add_argument("--output", required=True, metavar="DIR", help="the run's directory (resumes when it exists)")
    return ap


def _spec(text: str, flag: str):
    try:
        return load_spec(text)
    except (SpecError, OSError, ValueError) as e:
        raise UsageError(f"{flag}: {e}") from None


def _student_spec(args, teacher):
    student = _spec(args.student, "--student") if args.student else teacher
    if args.student_scale:
        from scaling.compound import ScalingError, compound_scale
        try:
            student = compound_scale(student, args.student_scale, name=f"{student.name or 'student'}-phi{args.student_scale:g}")
        except (ScalingError, ValueError) as e:
            raise UsageError(f"--student-scale: {e}") from None
    return student


def _teacher_weights(path: str, spec, num_classes: int):
    """The teacher's state dict, read and checked as every weights file is (nas.export); one line if it does not fit."""
    from .. import export as ex

    spec = spec.replace(num_classes=num_classes)
    try:
        classes = ex.fit_spec_to_weights(spec, path)[0].num_classes
        if classes != num_classes:
            raise UsageError(f"--teacher-weights {path}: the teacher has {classes} classes, the data {num_classes}")
        return ex.load_weights(spec, path).state_dict()
    except ex.WeightsError as e:
        raise UsageError(f"--teacher-weights: {e}") from None


@command("nas-student")
def main(argv=None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.threads > 1:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.resolution > MAX_RESOLUTION:
        raise UsageError(f"--resolution must be at most {MAX_RESOLUTION}, got {args.resolution}")
    if args.batch_size < 2:
        raise UsageError("--batch-size must be at least 2 (BatchNorm needs two samples)")
    if args.threshold >= 1:
        raise UsageError(f"--threshold must be below 1, got {args.threshold:g}")
    if args.randaugment_magnitude > 30:
        raise UsageError(f"--randaugment-magnitude must be at most 30, got {args.randaugment_magnitude}")
    teacher = _spec(args.teacher, "TEACHER_SPEC")
    student = _student_spec(args, teacher)
    for label, spec in (("teacher", teacher), ("student", student)):
        if args.resolution < min_resolution(spec):
            raise UsageError(f"--resolution {args.resolution} is too small for the {label} (total stride "
                             f"{total_stride(spec)}); use at least {min_resolution(spec)}")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {out} exists and is not a directory")
    data = load_data(args.data, seed=args.seed)
    unlabeled = load_data(args.unlabeled, seed=args.seed).train_x if args.unlabeled else None

    from ..devices import DeviceError, resolve_device
    try:
        device = resolve_device(args.device)
    except DeviceError as e:
        raise UsageError(f"--device: {e}") from None
    import torch

    from ..noisy_student import NoiseSettings, NoisyStudent, NoisyStudentError, StudentConfig
    torch.set_num_threads(args.threads)
    noise = NoiseSettings(randaugment=not (args.no_noise or args.no_randaugment), num_ops=args.randaugment_ops,
                          magnitude=args.randaugment_magnitude, model_noise=not (args.no_noise or args.no_model_noise))
    weights = _teacher_weights(args.teacher_weights, teacher, data.num_classes) if args.teacher_weights else None
    try:
        config = StudentConfig(labeled=args.labeled, rounds=args.rounds, pseudo=args.pseudo, threshold=args.threshold,
                               per_class=args.per_class, noise=noise, epochs=args.epochs, steps=args.steps,
                               resolution=args.resolution, batch_size=args.batch_size, recipe=args.recipe,
                               lr=args.lr, seed=args.seed, unlabeled=args.unlabeled)
        run = NoisyStudent(out, data, teacher, config, student=student, unlabeled_images=unlabeled,
                           unlabeled_name=args.unlabeled, teacher_weights=weights, progress=not args.quiet,
                           log=(lambda t: None) if args.quiet else (lambda t: print(f"nas-student: {t}", file=sys.stderr)),
                           device=device)
        summary = run.run()  # refuses a directory made for another request before writing
    except NoisyStudentError as e:
        raise UsageError(str(e)) from None
    except RuntimeError as e:
        if "training failed" in str(e):
            raise RuntimeFailure(str(e)) from None
        raise
    if args.json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        t = summary["teacher"]
        lines = [f"teacher ({teacher.name or 'spec'}, {args.labeled} labeled images): {t['accuracy']:.4f} held-out"]
        for r in summary["rounds"]:
            lines.append(f"round {r['round']}: student {r['student_accuracy']:.4f} held-out, "
                         f"{r['pseudo_labeled']} pseudo-labeled images, {r['seconds']:.0f} s")
        lines.append(f"wrote {out}{os.sep}summary.json and round-0..{args.rounds}/ (weights.pt, spec.json, metrics.json)")
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


entry = main.entry
