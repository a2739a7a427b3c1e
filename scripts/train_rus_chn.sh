#!/usr/bin/env bash
# Reproduces boneage's shipped RUS-CHN pipeline (--model rus-chn) from ../shared/data in one command:
#
#     bash scripts/train_rus_chn.sh [OUT_DIR] [--install] [--detector-only]
#
# Step 1 (detector): `boneage train --model rus_chn --annotated-only` on the training images that have the 21
#   hand keypoints (511 of the 568 annotated ids; the others are in the validation split): the heat-map
#   keypoint detector learns the keypoints that place the 13 RUS boxes, the stage heads start on those images.
# Step 2 (stages): `boneage train --model rus_chn --init STEP1 --freeze detector` on every training image:
#   the stage heads learn from the bone age alone (weak training through the RUS-CHN scores and curve,
#   see boneage.models.rus_chn.model), the detector stays as step 1 left it; at export the G&P-equivalent
#   map is fitted on the training images.
# Both use the default model's split (src/boneage/weights/default/split.json), so its validation images are
# held out of both steps. --install copies the step-2 model into src/boneage/weights/rus-chn; --detector-only
# stops after step 1 (how the detector options of benchmarks/results/rus_chn.md were trained, e.g.
# BONEAGE_TRAIN_ARGS='--model-option detector_options={"sac":true}' bash scripts/train_rus_chn.sh runs/rus-chn-sac --detector-only).
# On 2 CPU cores: step 1 about 10 minutes, step 2 about 40. Extra options for both steps: BONEAGE_TRAIN_ARGS,
# e.g. BONEAGE_TRAIN_ARGS='--model-option detector_options={"sac":true}'.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${BONEAGE_SHARED_DATA:-$ROOT/../shared/data}
OUT=runs/rus-chn
INSTALL=0
DETECTOR_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --install) INSTALL=1 ;;
    --detector-only) DETECTOR_ONLY=1 ;;
    *) OUT=$arg ;;
  esac
done
BONEAGE=${BONEAGE:-boneage}
mkdir -p "$OUT"
COMMON=(--model rus_chn --images "$SHARED/rsna-100px/images" --labels "$SHARED/rsna-100px/boneage-training-dataset.csv"
        --split-file "$ROOT/src/boneage/weights/default/split.json" --keypoints "$SHARED/annotations/hand-keypoints-21"
        --hand mask --image-size 256 --hflip 0 --batch-size 32 --cache-dir "$OUT/cache" --no-progress)
"$BONEAGE" train "${COMMON[@]}" --annotated-only --epochs 40 --val-every 10 --lr 2e-3 \
  --out-dir "$OUT/detector" ${BONEAGE_TRAIN_ARGS:-} > "$OUT/detector.log" 2>&1
if [ "$DETECTOR_ONLY" = 1 ]; then
  echo "step 1 done: $OUT/detector/model"
  exit 0
fi
"$BONEAGE" train "${COMMON[@]}" --init "$OUT/detector/model" --freeze detector --epochs 8 --val-every 2 --lr 1e-3 \
  --out-dir "$OUT/stages" ${BONEAGE_TRAIN_ARGS:-} > "$OUT/stages.log" 2>&1
if [ "$INSTALL" = 1 ]; then
  dest=$ROOT/src/boneage/weights/rus-chn
  mkdir -p "$dest"
  cp "$OUT/stages/model/model.safetensors" "$OUT/stages/model/config.json" "$OUT/stages/model/split.json" "$dest/"
  echo "installed $OUT/stages/model as the rus-chn model in $dest"
fi
