"""Print the parameter counts of effdet's tf_efficientdet_d0..d7: the reference numbers in
tests/test_detection.py.  effdet is test-only and needs torchvision, which cannot live beside the
toolkit's torch; run it from its own environment::

    python3 -m venv /work/venvs/effdet && /work/venvs/effdet/bin/pip install torch==2.14.1 torchvision==0.29.1 effdet
    HF_HUB_OFFLINE=1 /work/venvs/effdet/bin/python scripts/effdet_reference.py

One thread, construction only (no forward pass): cheap.
"""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # effdet otherwise tries a hub download for pretrained weights

from importlib.metadata import version
import torch
from effdet import create_model

torch.set_num_threads(1)


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


rows = {}
for i in range(8):
    name = f"tf_efficientdet_d{i}"
    m = create_model(name, pretrained=False, pretrained_backbone=False)
    rows[name] = {"total": count(m), "backbone": count(m.backbone), "fpn": count(m.fpn),
                  "class_net": count(m.class_net), "box_net": count(m.box_net)}
    print(name, json.dumps(rows[name]), flush=True)
print(f"effdet {version('effdet')}, torch {torch.__version__}")
