"""Each op is declared once: its module (nas/blocks.py, LAYERS) and its entry in the op
registry (nas/ops.py, OPS: its cost, the spec fields it pins, its description).

Every registered op is swept here (as timm sweeps its model registry): the module's
parameter count and fvcore's FLOP count equal the op's analytic cost, layer by layer,
in every variant the op has; the conv+linear convention is checked the same way.  A
new op gets these checks by being registered.  The last test adds an op to a copy of
the package, touching only blocks.py and ops.py, and exports a spec that uses it: the
spec format, the JSON Schema, the cost model and the exporter follow without an edit.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nas
from nas.blocks import LAYERS
from nas.cost import LAYER_COSTS, conv_out, count_params, fvcore_flops, layer_cost
from nas.ops import OPS as OP_REGISTRY
from nas.spec import OPS, Stage
from nas.testing import conv_linear_macs

torch.set_num_threads(1)


def test_every_op_has_one_module_and_one_cost():
    assert tuple(LAYERS) == tuple(LAYER_COSTS) == OPS == tuple(OP_REGISTRY)  # the schema's enum: tests/test_spec.py
    assert {n: cls.__name__ for n, cls in LAYERS.items()} == {n: op.module for n, op in OP_REGISTRY.items()}
    for name, op in OP_REGISTRY.items():
        assert op.name == name and op.description and set(op.fixed) <= set(Stage.FIELDS), name


# in_channels, out_channels, kernel, stride, expand_ratio, se_ratio, skip, resolution
VARIANTS = [
    (8, 8, 3, 1, 1, 0.0, "identity", 9),
    (8, 16, 5, 2, 3, 0.25, "pool", 9),  # odd size: 'same' padding and the ceil-mode pool round up
    (16, 8, 3, 2, 2.5, 0.5, "none", 8),
    (12, 12, 1, 1, 4, 0.25, "pool", 7),
]


def _variants(op):
    for cin, cout, k, stride, expand, se, skip, res in VARIANTS:
        row = dict(op=op, kernel=k, stride=stride, expand_ratio=expand, se_ratio=se, skip=skip, out_channels=cout,
                   repeats=1, activation="swish", se_activation="relu")
        row.update(OP_REGISTRY[op].fixed)  # the fields the op pins (dwconv: expand 1)
        yield Stage.from_dict(row, "stage"), cin, res


@pytest.mark.parametrize("op", list(LAYERS))
def test_op_cost_equals_its_module(op):
    for stage, cin, res in _variants(op):
        module = LAYERS[op](in_channels=cin, out_channels=stage.out_channels, kernel=stage.kernel, stride=stage.stride,
                            expand_ratio=stage.expand_ratio, se_ratio=stage.se_ratio, skip=stage.skip,
                            activation=stage.activation, se_activation=stage.se_activation, drop_path=0.1,
                            bn_eps=1e-3, bn_momentum=0.01).eval()
        c = layer_cost(stage, cin, stage.stride, res)
        assert c.params == count_params(module), stage
        assert c.flops == fvcore_flops(module, res, cin), stage
        assert c.flops > 0 or (op == "identity" and stage.stride == 1 and cin == stage.out_channels), stage
        assert c.conv_linear_flops == conv_linear_macs(module, res, cin), stage
        with torch.no_grad():
            out = module(torch.randn(2, cin, res, res))
        assert out.shape == (2, stage.out_channels, conv_out(res, stage.stride), conv_out(res, stage.stride))


# ------------------------------------------------------------------------------ a new op

NEW_OP_MODULE = '''

class PointwiseDepthwise(_Layer):
    """1x1 conv to the output width -> kxk depthwise (an op added by tests/test_ops.py)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: float,
                 se_ratio: float, skip: str, activation: str, se_activation: str, drop_path: float,
                 bn_eps: float, bn_momentum: float):
        super().__init__(in_channels, out_channels, stride, skip, drop_path, bn_eps, bn_momentum)
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.body.add_module("pointwise", ConvBNAct(in_channels, out_channels, 1, activation=activation, **bn))
        self.body.add_module("depthwise", ConvBNAct(out_channels, out_channels, kernel, stride, groups=out_channels,
                                                    activation=None, **bn))


LAYERS["pwdw"] = PointwiseDepthwise
'''

NEW_OP_DEF = '''
    OpDef("pwdw", "PointwiseDepthwise", pointwise_depthwise_cost,
          "1x1 conv to the output width, then kxk depthwise (an op added by tests/test_ops.py).",
          fixed={"expand_ratio": 1}),
'''

NEW_OP_COST = '''

def pointwise_depthwise_cost(*, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: float,
                             expanded: int, squeeze: int, resolution: int) -> Count:
    return (conv_bn(in_channels, out_channels, 1, resolution)
            + conv_bn(out_channels, out_channels, kernel, conv_out(resolution, stride), groups=out_channels))


'''

REGISTRY_END = ''')
"""Op name -> its :class:`OpDef`, in the spec vocabulary's order."""'''

CHECK = '''
import ast, importlib.util, json, sys
import torch
import nas
from nas.build import build_model
from nas.cost import cost, count_params, fvcore_flops
from nas.export import export_python
from nas.bn import recalibrate_bn
assert nas.__file__.startswith(sys.argv[1]), nas.__file__  # the patched copy, not the checkout
d = nas.load_spec("efficientnet-b0").replace(resolution=32, num_classes=10).to_dict()
d["stages"][1] = dict(d["stages"][1], op="pwdw", skip="pool", expand_ratio=1)
d["stages"][3] = dict(d["stages"][3], op="pwdw", expand_ratio=1)
spec = nas.Spec.from_dict(d)
import jsonschema
from nas.schema import schema
v = jsonschema.Draft202012Validator(schema())
v.validate(d)  # the schema knows the new op and its rule
bad = json.loads(json.dumps(d))
bad["stages"][3]["expand_ratio"] = 3
assert list(v.iter_errors(bad))
try:
    nas.Spec.from_dict(bad)
    raise AssertionError("the pinned field was not refused")
except nas.SpecError as e:
    assert str(e) == "stages[3].expand_ratio: must be 1 for op pwdw, got 3", e
torch.manual_seed(0)
model = build_model(spec)
c = cost(spec)
assert c.params == count_params(model), (c.params, count_params(model))
assert c.flops == fvcore_flops(model, 32), (c.flops, fvcore_flops(model, 32))
path = sys.argv[2]
open(path, "w").write(export_python(spec, "WithNewOp"))
imports = {n.module or "" for n in ast.walk(ast.parse(open(path).read())) if isinstance(n, ast.ImportFrom)}
assert {m.split(".")[0] for m in imports} <= {"__future__", "typing", "torch"}, imports
recalibrate_bn(model, [torch.randn(8, 3, 32, 32)])
for name in list(sys.modules):
    if name == "nas" or name.startswith("nas."):
        sys.modules[name] = None  # the exported file must not need the toolkit
m = importlib.util.spec_from_file_location("with_new_op", path)
mod = importlib.util.module_from_spec(m)
m.loader.exec_module(mod)
theirs = mod.WithNewOp()
theirs.load_state_dict(model.state_dict(), strict=True)
x = torch.randn(3, 3, 32, 32)
with torch.no_grad():
    a, b = model.eval()(x), theirs.eval()(x)
assert a.abs().max() > 1e-2 and torch.equal(a, b)
print(json.dumps({"params": c.params, "flops": c.flops, "layers": [type(l).__name__ for s in theirs.stages for l in s]}))
'''


def test_a_new_op_touches_two_files(tmp_path):
    src = Path(nas.__file__).parent
    pkg = tmp_path / "nas"
    shutil.copytree(src, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    # The whole change for a new op: its module (nas/blocks.py) and its registry entry (nas/ops.py).
    with open(pkg / "blocks.py", "a", encoding="utf-8") as f:
        f.write(NEW_OP_MODULE)
    ops_py = (pkg / "ops.py").read_text(encoding="utf-8")
    assert ops_py.count(REGISTRY_END) == 1 and ops_py.count("\nOPS: dict[str, OpDef] = _registry(") == 1
    ops_py = ops_py.replace("\nOPS: dict[str, OpDef] = _registry(", NEW_OP_COST + "OPS: dict[str, OpDef] = _registry(")
    (pkg / "ops.py").write_text(ops_py.replace(REGISTRY_END, NEW_OP_DEF + REGISTRY_END), encoding="utf-8")
    changed = {str(p.relative_to(pkg)) for p in pkg.rglob("*") if p.is_file()
               and p.read_bytes() != (src / p.relative_to(pkg)).read_bytes()}
    assert changed == {"blocks.py", "ops.py"}  # spec.py, cost.py, the schema, export.py and build.py untouched

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = str(tmp_path)
    r = subprocess.run([sys.executable, "-c", CHECK, str(pkg), str(tmp_path / "with_new_op.py")], env=env,
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "PointwiseDepthwise" in r.stdout
