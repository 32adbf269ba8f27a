#!/usr/bin/env bash
# The supernet end to end (issue 22, section 4): search from a trained supernet, then train the found
# architecture alone at the ground truth's budget (2 seeds), and fine-tune the handed-over weights.
#
#   bash scripts/supernet_end_to_end.sh runs/sn      # the supernet folder (nas-supernet train --output)
#
# Writes results/supernet/end-to-end/ (search outputs without the weights, the trainings' metrics,
# summary.json); the weights stay in runs/supernet-end-to-end/.
set -euo pipefail
SN=${1:?usage: supernet_end_to_end.sh SUPERNET_DIR}
OUT=results/supernet/end-to-end
W=runs/supernet-end-to-end
mkdir -p "$OUT" "$W"
GT_BUDGET=(--data fashion-mnist --epochs 3 --resolution 28 --batch-size 128 --lr 0.012 --no-augment --limit-train 10000)

# 1. search: 60 members scored by inheritance, FLOPs target 400M (the README's main job's target)
nas-search --target-flops 400M --estimator "supernet:$SN" --data fashion-mnist --limit-val 5000 --budget 60 \
    --workers 2 --no-progress --output "$OUT/search-400M"
mv "$OUT/search-400M/best.weights.pt" "$W/best.weights.pt"
BEST="$OUT/search-400M/best.json"

# 2. the handed-over weights as extracted (held-out accuracy, BN recalibrated)
nas-supernet score "$BEST" --supernet "$SN" --limit-val 10000 --json > "$OUT/inherited.json"

# 3. trained alone at the ground truth's budget, two seeds (the reference rows: the default search's
#    400M result 0.867 / 0.870, B0 0.843 / 0.832 with the same command)
for S in 0 1; do
  nas-train "$BEST" "${GT_BUDGET[@]}" --seed "$S" --quiet --json --output "$W/alone-seed$S" > "$OUT/alone-seed$S.json" &
done
wait

# 4. one epoch from the handed-over weights against one epoch from scratch (same command otherwise)
ONE=(--data fashion-mnist --epochs 1 --resolution 28 --batch-size 128 --lr 0.012 --no-augment --limit-train 10000 --seed 0)
nas-train "$BEST" "${ONE[@]}" --init "$W/best.weights.pt" --quiet --json --output "$W/finetune-1ep" > "$OUT/finetune-1ep.json" &
nas-train "$BEST" "${ONE[@]}" --quiet --json --output "$W/scratch-1ep" > "$OUT/scratch-1ep.json" &
wait

python - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
acc = lambda f: json.loads((out / f).read_text())
s = json.loads((out / "search-400M" / "summary.json").read_text())
r = {"best_flops": s["best"].get("flops"), "inherited_accuracy": acc("inherited.json")["accuracy"],
     "alone_3ep": [acc(f"alone-seed{k}.json")["accuracy"] for k in (0, 1)],
     "finetune_1ep_from_supernet": acc("finetune-1ep.json")["accuracy"],
     "scratch_1ep": acc("scratch-1ep.json")["accuracy"],
     "reference_3ep": {"default search 400M": [0.867, 0.870], "efficientnet-b0": [0.843, 0.832]}}
(out / "summary.json").write_text(json.dumps(r, indent=1) + "\n")
print(json.dumps(r, indent=1))
EOF
