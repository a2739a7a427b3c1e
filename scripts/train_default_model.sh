#!/usr/bin/env bash
# Reproduces boneage's shipped default model and its robust variant from ../shared/data/rsna-100px in one command:
#
#     bash scripts/train_default_model.sh [OUT_DIR] [--install] [--stage1 MODEL]
#
# Stage 1: two half-width ResNet-18 ordinal models without the stem's max pooling, on the native 100x100 images,
# hand cropped and masked by the shipped segmenter (seeds 0 and 1, the same seeded 90/10 split), 45 epochs,
# trained side by side with one thread each, combined into an ensemble (OUT_DIR/stage1).
# Stage 1 is the shipped default model.
# Stage 2: each member fine-tuned from its stage-1 weights for STAGE2_EPOCHS (default 12) more epochs at a lower
# learning rate, with a sex head (so a radiograph of unknown sex gets a bone age for its predicted sex) and the
# acquisition augmentations (resampling, blur, noise, JPEG) that benchmarks/recipe.py and benchmarks/robustness.py
# measure; the two are combined into an ensemble (OUT_DIR/stage2/ensemble) and its 95% interval calibrated: the
# shipped `robust` model. In each ensemble the mean of the members (each averaged with its mirror image) is the
# prediction, their SD the model's own uncertainty.
# --stage1 MODEL skips stage 1 and starts stage 2 from that ensemble (the shipped robust model was made from the
# shipped default). --install copies stage 1 (when trained here) into src/boneage/weights/default and stage 2 into
# src/boneage/weights/robust, which is what the package ships. On 2 CPU cores stage 1 takes about 90 minutes and
# stage 2 about 25; on a GPU a few minutes.
# BONEAGE_TRAIN_ARGS adds options to every member's training; STAGE2_ARGS to stage 2 only.
set -euo pipefail
DATA=${BONEAGE_SHARED_DATA:-../shared/data}/rsna-100px
OUT=runs/default-model
INSTALL=0
STAGE1=""
while [ $# -gt 0 ]; do
  case "$1" in
    --install) INSTALL=1 ;;
    --stage1) STAGE1=$2; shift ;;
    *) OUT=$1 ;;
  esac
  shift
done
BONEAGE=${BONEAGE:-boneage}
EPOCHS2=${STAGE2_EPOCHS:-12}
COMMON=(--images "$DATA/images" --labels "$DATA/boneage-training-dataset.csv" --model global_resnet18 --width 0.5
        --no-max-pool --head ordinal --image-size 100 --split-seed 0 --hand crop_mask --hand-contrast
        --cache-dir "$OUT/cache" --no-progress --threads 1)
mkdir -p "$OUT"
train_pair() {  # stage name, then the options of both members ("SEED" is replaced by the member's seed)
  local stage=$1; shift
  local pids=()
  for seed in 0 1; do
    "$BONEAGE" train "${COMMON[@]}" "${@//SEED/$seed}" --seed "$seed" --out-dir "$OUT/$stage/seed$seed" \
      ${BONEAGE_TRAIN_ARGS:-} > "$OUT/$stage-seed$seed.log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  "$BONEAGE" ensemble "$OUT/$stage/seed0/model" "$OUT/$stage/seed1/model" --out-dir "$OUT/$stage/ensemble" \
    --images "$DATA/images" --labels "$DATA/boneage-training-dataset.csv"
}
if [ -z "$STAGE1" ]; then
  train_pair stage1 --epochs 45
  STAGE1=$OUT/stage1/ensemble
fi
train_pair stage2 --init "$STAGE1" --init-member SEED --split-file "$STAGE1/split.json" --epochs "$EPOCHS2" --lr 5e-4 \
  --warmup-epochs 0.5 --model-option sex_head=true --resample-prob 0.3 --blur 1.0 --noise 0.06 --jpeg-prob 0.3 \
  ${STAGE2_ARGS:-}
"$BONEAGE" calibrate --model "$OUT/stage2/ensemble" --images "$DATA/images" --labels "$DATA/boneage-training-dataset.csv"
if [ "$INSTALL" = 1 ]; then
  weights=$(dirname "$0")/../src/boneage/weights
  if [ "$STAGE1" = "$OUT/stage1/ensemble" ]; then
    "$BONEAGE" calibrate --model "$STAGE1" --images "$DATA/images" --labels "$DATA/boneage-training-dataset.csv"
    mkdir -p "$weights/default"
    cp "$STAGE1/model.safetensors" "$STAGE1/config.json" "$STAGE1/split.json" "$weights/default/"
    echo "installed $STAGE1 as the default model in $weights/default"
  fi
  mkdir -p "$weights/robust"
  cp "$OUT/stage2/ensemble/model.safetensors" "$OUT/stage2/ensemble/config.json" "$OUT/stage2/ensemble/split.json" "$weights/robust/"
  echo "installed $OUT/stage2/ensemble as the robust model in $weights/robust"
fi
