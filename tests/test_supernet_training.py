"""Supernet training settings (issue 22): the sandwich's ends, zero-initialised residuals, old checkpoints,
hostile checkpoints, and data-parallel training under torchrun (gradients averaged exactly; one writer;
resume with another process count)."""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas.supernet import Supernet, SupernetError, TrainConfig, load_supernet, read_checkpoint, train_supernet
from nas.supernet._distributed import World, average_gradients
from nas.supernet._train import sandwich
from search_spaces import get_space

ROOT = Path(__file__).resolve().parents[1]
SPACE = get_space("mnasnet-b0")
TINY = dict(data="sample", resolution=16, batch_size=16, limit_train=32, eval_images=0)


@pytest.fixture(scope="module")
def net(one_torch_thread):
    torch.manual_seed(0)
    return Supernet(SPACE, num_classes=10)


def _ops(member):
    return {s.op for s in member.spec.stages}


def test_the_default_sandwich_is_the_old_one(net):
    """The default must draw exactly what the recipe drew before the settings existed (resumes stay exact)."""
    cfg = TrainConfig(**TINY, **BEFORE)
    for step in (0, 7):
        rng = random.Random(f"{cfg.seed}:{step}")
        old = [net.largest, net.smallest] + [net.sample(rng) for _ in range(cfg.random_members)]
        assert [m.fingerprint() for m in sandwich(net, cfg, step)] == [m.fingerprint() for m in old]


def test_the_sandwich_ends(net):
    mb = sandwich(net, TrainConfig(smallest="mbconv", **TINY), 0)
    assert _ops(mb[0]) == _ops(mb[1]) == {"mbconv"}  # both ends on one branch: its weights trained at both ends
    assert {s.expand_ratio for s in mb[1].spec.stages} == {3}
    assert {s.kernel for s in mb[1].spec.stages} == {3} and {s.se_ratio for s in mb[1].spec.stages} == {0.0}
    turns = [_ops(sandwich(net, TrainConfig(smallest="rotate", **TINY), step)[1]) for step in range(3)]
    assert sorted(o for t in turns for o in t) == ["conv", "dwconv", "mbconv"]
    none = sandwich(net, TrainConfig(smallest="none", random_members=3, **TINY), 0)
    assert len(none) == 4 and none[0] is net.largest


def test_progressive_shrinking_opens_one_choice_per_phase(net):
    cfg = TrainConfig(schedule="progressive", **TINY)
    total = 70  # 7 phases of 10 steps
    first = sandwich(net, cfg, 0, total)
    assert [m.fingerprint() for m in first] == [net.largest.fingerprint()]  # the largest alone
    top = net.largest.choices
    for step, elastic in ((10, {"kernel"}), (25, {"kernel", "layers"})):
        for m in sandwich(net, cfg, step, total):
            assert {n.split("_", 1)[1] for n, v in m.choices.items() if v != top[n]} <= elastic
    last = sandwich(net, cfg, total - 1, total)  # every choice elastic: the sandwich's own members
    assert [m.fingerprint() for m in last] == [m.fingerprint() for m in sandwich(net, TrainConfig(**TINY), total - 1)]


def test_plain_bn_extraction_equals_the_supernet(one_torch_thread):
    """With private BN for layers without a shortcut, extraction still builds exactly the member."""
    from nas.build import build_model
    torch.manual_seed(0)
    n = Supernet(SPACE, num_classes=10, plain_bn=True).eval()
    g = torch.Generator().manual_seed(1)
    for m in n.modules():  # fresh BN would hide a wrong twin
        if isinstance(m, torch.nn.BatchNorm2d):
            for t in (m.running_mean, m.running_var, m.weight.data, m.bias.data):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    rng = random.Random(0)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    for skip in ("none", "identity", "pool"):
        c = {**SPACE.sample(rng), **{k: skip for k in SPACE.param_names if k.endswith("_skip")}}
        member = n.member(SPACE.decode(c))
        model = build_model(member.spec)
        model.load_state_dict(n.extract(member), strict=True)
        with torch.no_grad():
            want, got = n(x, member), model.eval()(x)
        assert want.abs().max() > 1e-2
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the twins differ, so a member without shortcuts reads other BN values than one with them
    assert not torch.equal(n.stages[1][1].ops["mbconv"].project[1].weight, n.stages[1][1].ops["mbconv"].project[2].weight)


def test_blockwise_distillation_of_the_teacher_itself_is_its_own_forward(net):
    """Fed its own stage inputs, the largest member's blockwise pass is its forward pass exactly."""
    net.eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    feats, stem = [], []
    with torch.no_grad():
        logits = net(x, net.largest, features=feats, stem=stem)
        outs, again = net.forward_blockwise(net.largest, stem[0], feats)
    assert len(outs) == len(feats) == len(SPACE.base.stages)
    for a, b in zip(outs, feats):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(again, logits, atol=0, rtol=0)
    # a narrower member reads the teacher's first channels at every stage input
    small = net.smallest
    outs, out = net.forward_blockwise(small, stem[0], feats)
    assert [o.shape[1] for o in outs] == [s.out_channels for s in small.spec.stages] and out.shape == (3, 10)


def test_zero_init_residual_makes_a_deep_member_start_as_its_shallow_self(one_torch_thread):
    torch.manual_seed(0)
    n = Supernet(SPACE, num_classes=10)
    n.zero_init_residual()
    n.classifier.weight.data.normal_(generator=torch.Generator().manual_seed(3))  # the reference init is ~0 there
    n.train()  # batch statistics: fresh running statistics would shrink the features to ~1e-14
    deep = {k: (1 if k.endswith("_layers") else "identity" if k.endswith("_skip") else v)
            for k, v in n.largest.choices.items()}
    shallow = {**deep, **{k: 0 for k in deep if k.endswith("_layers")}}
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = n(x, n.member(SPACE.decode(deep)))
        b = n(x, n.member(SPACE.decode(shallow)))
    assert a.abs().max() > 1e-3
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    # without it the two differ: the test can fail
    torch.manual_seed(0)
    plain = Supernet(SPACE, num_classes=10).train()
    plain.classifier.weight.data.normal_(generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (plain(x, plain.member(SPACE.decode(deep))) - plain(x, plain.member(SPACE.decode(shallow)))).abs().max() > 1e-4


# what version-1 checkpoints written before the settings existed were trained with
BEFORE = dict(smallest="dwconv", weight_decay=None, zero_init_residual=False, schedule="sandwich", plain_bn=False,
              feature_distill=0.0)


def test_a_checkpoint_from_before_the_settings_resumes_as_it_was_trained(tmp_path, one_torch_thread):
    old_cfg = TrainConfig(epochs=2, **TINY, **BEFORE)
    from nas.data import load_dataset
    data = load_dataset("sample", seed=0)
    out = tmp_path / "old"
    train_supernet(old_cfg, data, out, progress=False, max_steps=1)
    ck = torch.load(out / "supernet.pt", weights_only=True)
    for k in BEFORE:
        del ck["config"][k]  # as version-1 files written before these settings
    torch.save(ck, out / "supernet.pt")
    assert not load_supernet(out)[0].plain_bn  # built as it was trained: no private BN twins
    # today's defaults differ from what it was trained with: refused by name, not resumed with them
    with pytest.raises(SupernetError, match="feature_distill, plain_bn, weight_decay"):
        train_supernet(TrainConfig(epochs=2, **TINY), data, out, progress=False)
    s = train_supernet(old_cfg, data, out, progress=False)
    assert s["complete"] and s["step"] == 4


def test_hostile_and_corrupt_checkpoints_are_named_in_whole_words(tmp_path):
    class Hostile:
        def __reduce__(self):
            return (os.system, ("true",))

    (tmp_path / "h").mkdir()
    torch.save({"format": "nas-supernet", "x": Hostile()}, tmp_path / "h" / "supernet.pt")
    with pytest.raises(SupernetError, match=r"asks to run Python object posix\.system; only tensors"):
        load_supernet(tmp_path / "h")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "supernet.pt").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(SupernetError, match=r"truncated, or not a file written by torch\.save\)$"):
        load_supernet(tmp_path / "t")


def test_hostile_checkpoint_on_the_command_line_is_one_line_without_warnings(tmp_path):
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "supernet.pt").write_bytes(b"garbage\n")
    r = subprocess.run([sys.executable, "-W", "always", "-c",
                        "import sys; from nas.cli.supernet import main; sys.exit(main(sys.argv[1:]))",
                        "score", "efficientnet-b0", "--supernet", str(tmp_path / "h")],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "corrupt" in r.stderr and r.stderr.rstrip().endswith(")"), r.stderr


# ---------------------------------------------------------------- torch.distributed


def _average_worker(rank: int, world: int, port: int, q) -> None:
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    p = [torch.nn.Parameter(torch.zeros(3, 2)), torch.nn.Parameter(torch.zeros(5)), torch.nn.Parameter(torch.zeros(1))]
    p[0].grad = torch.full((3, 2), float(rank + 1))
    p[1].grad = torch.arange(5.0) * (rank + 1)
    # p[2] holds no gradient (a member that does not use it): it must stay None
    average_gradients(p, World(rank, world, rank))
    q.put((rank, p[0].grad.tolist(), p[1].grad.tolist(), p[2].grad))
    dist.destroy_process_group()


def test_gradients_are_averaged_exactly_over_processes():
    import socket
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_average_worker, args=(r, 2, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    got = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    for _, g0, g1, g2 in got:
        assert g0 == [[1.5, 1.5]] * 3  # (1 + 2) / 2
        assert g1 == [0.0, 1.5, 3.0, 4.5, 6.0]
        assert g2 is None


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_two_processes_one_writer_then_resume_with_one(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    out = tmp_path / "ddp"
    train = ["train", "--data", "sample", "--epochs", "2", "--resolution", "16", "--batch-size", "16",
             "--limit-train", "32", "--eval-images", "0", "--output", str(out), "--quiet", "--json"]
    script = "import sys; from nas.cli.supernet import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    pyfile = tmp_path / "nas_supernet.py"
    pyfile.write_text(script + "\n")
    r = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", str(pyfile), *train, "--max-steps", "2"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    assert len(lines) == 1  # one process reports
    ck = read_checkpoint(out)
    assert ck["world_size"] == 2 and ck["global_batch"] == 16 and ck["step"] == 2 and not ck["complete"]
    # the same folder resumed by one process (another process count) finishes the run
    r = subprocess.run([sys.executable, str(pyfile), *train], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads(r.stdout)
    assert s["complete"] and s["step"] == 4 and s["world_size"] == 1
