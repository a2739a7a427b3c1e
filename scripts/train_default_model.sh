#!/usr/bin/env bash
# Reproduces boneage's shipped default model from ../shared/data/rsna-100px in one command:
#
#     bash scripts/train_default_model.sh [OUT_DIR] [--install]
#
# Two half-width ResNet-18 ordinal models without the stem's max pooling, on the native 100x100
# images (seeds 0 and 1, the same seeded 90/10 split), trained side by side with one thread each as
# the shipped model was, then combined into one ensemble: the mean of the members (each averaged with
# its mirror image) is the prediction, their SD the model's own uncertainty. --install copies the
# ensemble into src/boneage/weights/default, which is what the package ships.
# On 2 CPU cores the whole recipe takes about an hour; on a GPU a few minutes.
# BONEAGE_TRAIN_ARGS adds options to both members' training, e.g. the hand clean-up:
#     BONEAGE_TRAIN_ARGS="--hand crop_mask --hand-contrast" bash scripts/train_default_model.sh runs/seg
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
mkdir -p "$OUT"
pids=()
for seed in 0 1; do
  "$BONEAGE" train --images "$DATA/images" --labels "$DATA/boneage-training-dataset.csv" \
    --model global_resnet18 --width 0.5 --no-max-pool --head ordinal --image-size 100 --epochs 45 \
    --split-seed 0 --seed "$seed" --out-dir "$OUT/seed$seed" --cache-dir "$OUT/cache" --no-progress --threads 1 \
    ${BONEAGE_TRAIN_ARGS:-} > "$OUT/seed$seed.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
"$BONEAGE" ensemble "$OUT"/seed0/model "$OUT"/seed1/model --out-dir "$OUT/ensemble" \
  --images "$DATA/images" --labels "$DATA/boneage-training-dataset.csv"
if [ "$INSTALL" = 1 ]; then
  dest=$(dirname "$0")/../src/boneage/weights/default
  mkdir -p "$dest"
  cp "$OUT/ensemble/model.safetensors" "$OUT/ensemble/config.json" "$OUT/ensemble/split.json" "$dest/"
  echo "installed $OUT/ensemble as the default model in $dest"
fi
