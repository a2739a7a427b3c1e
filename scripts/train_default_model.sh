#!/usr/bin/env bash
# Reproduces boneage's shipped default model from ../shared/data/rsna-100px in one command:
#
#     bash scripts/train_default_model.sh [OUT_DIR] [--install]
#
# Three half-width ResNet-18 ordinal models (seeds 0, 1, 2) on the same seeded 90/10 split, combined
# into one ensemble whose mean is the prediction and whose SD across members is the model's own
# uncertainty. --install copies the ensemble into src/boneage/weights/default (what the package ships).
# On 2 CPU cores each member takes about 25 minutes; on a GPU a few minutes.
set -euo pipefail
DATA=${BONEAGE_SHARED_DATA:-../shared/data}/rsna-100px
OUT=runs/default-model
INSTALL=0
for arg in "$@"; do
  case "$arg" in
    --install) INSTALL=1 ;;
    *) OUT=$arg ;;
  esac
done
BONEAGE=${BONEAGE:-boneage}
for seed in 0 1 2; do
  "$BONEAGE" train --images "$DATA/images" --labels "$DATA/boneage-training-dataset.csv" \
    --model global_resnet18 --width 0.5 --head ordinal --image-size 128 --epochs 60 \
    --split-seed 0 --seed "$seed" --out-dir "$OUT/seed$seed" --cache-dir "$OUT/cache" --no-progress
done
"$BONEAGE" ensemble "$OUT"/seed0/model "$OUT"/seed1/model "$OUT"/seed2/model --out-dir "$OUT/ensemble" \
  --images "$DATA/images" --labels "$DATA/boneage-training-dataset.csv"
if [ "$INSTALL" = 1 ]; then
  dest=$(dirname "$0")/../src/boneage/weights/default
  mkdir -p "$dest"
  cp "$OUT/ensemble/model.safetensors" "$OUT/ensemble/config.json" "$OUT/ensemble/split.json" "$dest/"
  echo "installed $OUT/ensemble as the default model in $dest"
fi
