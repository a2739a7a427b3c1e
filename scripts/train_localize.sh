#!/usr/bin/env bash
# Reproduces boneage's shipped localize-then-regress model (--model localize) from ../shared/data in one command:
#
#     bash scripts/train_localize.sh [OUT_DIR] [--install]
#
# Step 1 (localizer): `boneage train --model localize_regress --model-option phase=localizer`: the classifier
#   over four age groups (0-5, 5-10, 10-15, 15-19 years) on the whole hand at 100 px.
# Step 2 (regressor): `--model-option phase=regressor --init STEP1 --init DEFAULT --init-member 0`: the
#   localizer, frozen, takes the Grad-CAM of the age group it predicts, thresholds it at gamma = 0.5 and crops
#   that region; the regressor (ResNet-18 at half width, sex through its own 32-unit branch, two fully connected
#   layers, MSE) learns the bone age from the crops, started from the default model's first member (its
#   backbone, sex branch and first fully connected layer; see benchmarks/results/localize.md for what that
#   gives), for 20 epochs.
# Both use the default model's preprocessing (hand cropped and masked, contrast over the hand) and split
# (src/boneage/weights/default/split.json). The model is given the hand at 100 px, as it trained: crops from a
# 512 px image measured worse for it (see the README), so no --inference-size. --install copies the step-2
# model into src/boneage/weights/localize. On 2 CPU cores: step 1 about 6 minutes, step 2 about 35.
# Extra options for step 2: BONEAGE_TRAIN_ARGS (e.g. '--model-option gamma=0.25').
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${BONEAGE_SHARED_DATA:-$ROOT/../shared/data}
OUT=runs/localize
INSTALL=0
for arg in "$@"; do
  case "$arg" in
    --install) INSTALL=1 ;;
    *) OUT=$arg ;;
  esac
done
BONEAGE=${BONEAGE:-boneage}
mkdir -p "$OUT"
COMMON=(--model localize_regress --images "$SHARED/rsna-100px/images" --labels "$SHARED/rsna-100px/boneage-training-dataset.csv"
        --split-file "$ROOT/src/boneage/weights/default/split.json" --width 0.5 --no-max-pool --image-size 100
        --hand crop_mask --hand-contrast --cache-dir "$OUT/cache" --no-progress)
if [ ! -f "$OUT/localizer/model/config.json" ]; then
  "$BONEAGE" train "${COMMON[@]}" --model-option phase=localizer --epochs 6 --out-dir "$OUT/localizer" > "$OUT/localizer.log" 2>&1
fi
"$BONEAGE" train "${COMMON[@]}" --model-option phase=regressor --model-option gamma=0.5 --init "$OUT/localizer/model" \
  --init "$ROOT/src/boneage/weights/default" --init-member 0 --epochs 20 --out-dir "$OUT/regressor" ${BONEAGE_TRAIN_ARGS:-} \
  > "$OUT/regressor.log" 2>&1
if [ "$INSTALL" = 1 ]; then
  dest=$ROOT/src/boneage/weights/localize
  mkdir -p "$dest"
  cp "$OUT/regressor/model/model.safetensors" "$OUT/regressor/model/config.json" "$OUT/regressor/model/split.json" "$dest/"
  echo "installed $OUT/regressor/model as the localize model in $dest"
fi
