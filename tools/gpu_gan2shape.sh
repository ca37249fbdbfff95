#!/usr/bin/env bash
# GAN2Shape's GPU work (issue 5: the synthetic-face StyleGAN2, then SIDE / MAD and the per-image time) in
# phases that each fit one 10-minute call of the device tool. Every phase leaves what the next one needs in
# $OUT as a single tarball (the tool brings back at most 8 files), and takes it back from gpu-carry/ (carry
# that folder: `mkdir -p gpu-carry && cp <files_at>/*.tgz gpu-carry/`, with gpu-carry in .git/info/exclude).
#
#   OUT=dir bash tools/gpu_gan2shape.sh train MINUTES [extra train args]   # trains / resumes runs/sg2
#   OUT=dir bash tools/gpu_gan2shape.sh eval MINUTES N [extra eval args]   # eval-gan2shape --resume on N faces
#   PRETRAIN_N=200 PRETRAIN_SCALE=0.5 OUT=dir bash tools/gpu_gan2shape.sh eval ...  # joint pretraining first
#   # the best CPU configuration so far (README's GAN2Shape table; docs/gan2shape.md, "The anchors in the canonical frame"):
#   A="--depth-anchor --tilt-anchor --anchor-frame canonical --prior-near 0.96 --prior-far 1.03 --prior-box plain"
#   PRETRAIN_N=200 PRETRAIN_ARGS="--data synthetic-faces $A --view-supervision 10" OUT=dir bash tools/gpu_gan2shape.sh eval MINUTES N $A --nets-only
#
# train: `voxrender train stylegan2` on the synthetic faces (64 px, at most 64 channels, W 256, batch 32,
#   images cached in memory, bf16 autocast), stopping cleanly after MINUTES (--max-minutes); returns
#   sg2.tgz (last.ckpt, stylegan2.pt, samples.png, config.json, log).
# eval: `voxrender eval-gan2shape` with that generator on N held-out faces for at most MINUTES (records in
#   OUT/progress; --resume continues in the next call); returns g2s.tgz (metrics.json once all N are done,
#   the records, the depth arrays, the pictures of the first image, log).
#   With PRETRAIN_N set, GAN2Shape's joint pretraining (`pretrain-gan2shape` on PRETRAIN_N GAN samples,
#   steps x PRETRAIN_SCALE, default 1, options PRETRAIN_ARGS) runs first into runs/g2s-pre (--resume: it continues from its last
#   stage on a machine still warm; the 170 MB of weights do not travel) and every face starts from it
#   (--pretrained); its pretrain.json and pretrained.png come back in g2s.tgz.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
phase=${1:?usage: tools/gpu_gan2shape.sh train|eval MINUTES ...}
minutes=${2:?MINUTES}
shift 2
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$OUT/gpu.txt" 2>&1 || true
# Pure PyTorch from here on (StyleGAN2 and GAN2Shape need no compiled extension); the package is put on
# the path without building it, so a phase spends its minutes on the work.
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
VR="$PY -m voxrender"

case $phase in
train)
  mkdir -p runs
  [ -f gpu-carry/sg2.tgz ] && tar xzf gpu-carry/sg2.tgz -C runs
  args=(--data synthetic-faces --size 64 --channels-max 64 --style-dim 256 --n-mlp 8 --batch-size 32
        --amp bf16 --image-cache on --ckpt-every 1000 --sample-every 1000 --steps 200000 --seed 0
        --no-progress --out runs/sg2)
  [ -f runs/sg2/last.ckpt ] && args+=(--resume)
  mkdir -p runs/sg2
  # the budget leaves a minute for start-up, the image cache and the tarball
  $VR train stylegan2 "${args[@]}" --max-minutes "$minutes" "$@" 2>&1 | tee runs/sg2/train-$(date -u +%H%M).log | tail -n 5
  tar czf "$OUT/sg2.tgz" -C runs sg2
  ;;
eval)
  n=${1:?N}
  shift
  mkdir -p runs
  [ -f gpu-carry/sg2.tgz ] && tar xzf gpu-carry/sg2.tgz -C runs
  [ -f gpu-carry/g2s.tgz ] && tar xzf gpu-carry/g2s.tgz -C runs
  [ -f runs/sg2/stylegan2.pt ] || { echo "no runs/sg2/stylegan2.pt: run the train phase first"; exit 1; }
  end=$(($(date +%s) + minutes * 60))
  pre=()
  if [ -n "${PRETRAIN_N:-}" ]; then
    [ -f runs/g2s-pre/pretrained.pt ] || timeout --signal=INT "$((end - $(date +%s)))" $VR pretrain-gan2shape \
      --gan runs/sg2/stylegan2.pt --n "$PRETRAIN_N" --steps-scale "${PRETRAIN_SCALE:-1}" --out runs/g2s-pre \
      --resume --no-progress ${PRETRAIN_ARGS:-} 2>&1 | tee runs/g2s-pre-$(date -u +%H%M).log | tail -n 5
    [ -f runs/g2s-pre/pretrained.pt ] || { echo "pretraining not finished: call again (it resumes)"; }
    pre=(--pretrained runs/g2s-pre/pretrained.pt)
  fi
  if [ "$(date +%s)" -lt "$end" ] && { [ -z "${PRETRAIN_N:-}" ] || [ -f runs/g2s-pre/pretrained.pt ]; }; then
    timeout --signal=INT "$((end - $(date +%s)))" $VR eval-gan2shape --gan runs/sg2/stylegan2.pt --n "$n" \
      --out runs/g2s-eval --resume --save-images --no-progress "${pre[@]}" "$@" 2>&1 \
      | tee runs/g2s-eval-$(date -u +%H%M).log | tail -n 30
  fi
  mkdir -p runs/g2s-eval
  # everything but the per-image pictures (those of the first image only) and the pretrained weights
  (cd runs && { find g2s-eval -path g2s-eval/images -prune -o -type f -print; find g2s-eval/images/test_0000 -type f 2>/dev/null;
                ls g2s-pre/pretrain.json g2s-pre/pretrained.png g2s-*.log 2>/dev/null; }) | tar czf "$OUT/g2s.tgz" -C runs -T -
  ;;
*)
  echo "unknown phase $phase (train or eval)"; exit 2 ;;
esac
ls -la "$OUT"
