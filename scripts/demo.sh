#!/usr/bin/env bash
# The README's first command: set up, generate the bundled sample clip, upscale it.
#
#   bash scripts/demo.sh [WEIGHTS_DIR]
#
# With the Upscale-A-Video weights (WEIGHTS_DIR, $UAV_WEIGHTS or ./pretrained_models/upscale_a_video)
# the real model upscales the clip. Without them it runs a clearly labelled SELF-CHECK: tiny
# RANDOM networks go through every stage and the output, out/sample_uav_selfcheck_random.mp4,
# is noise, not an upscale.
#
# UAV_DEMO_OUT=DIR writes somewhere else than out/; UAV_DEMO_SKIP_SETUP=1 skips scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${UAV_DEMO_OUT:-out}"
WEIGHTS="${1:-${UAV_WEIGHTS:-}}"
if [ -z "$WEIGHTS" ] && [ -d pretrained_models/upscale_a_video ]; then
  WEIGHTS=pretrained_models/upscale_a_video
fi

if [ "${UAV_DEMO_SKIP_SETUP:-0}" != "1" ]; then
  echo "== setting up .venv (scripts/setup.sh)"
  bash scripts/setup.sh
fi
PY=.venv/bin/python
UAV=.venv/bin/uav

mkdir -p "$OUT"
echo "== generating the sample clip: $OUT/sample.mp4 (24 frames, 64x48, with a 440 Hz tone)"
"$PY" scripts/make_sample_clip.py "$OUT/sample.mp4" --frames 24 --width 64 --height 48 >/dev/null

if [ -n "$WEIGHTS" ]; then
  echo "== upscaling with the weights in $WEIGHTS (published settings, propagation at steps 24,26,28 of 30)"
  echo "   On a GPU this takes under a minute; on a CPU the full model needs a long time."
  "$UAV" upscale "$OUT/sample.mp4" -o "$OUT/sample_uav.mp4" --weights "$WEIGHTS" \
    --propagation-steps 24,26,28 --seed 0
  exit 0
fi

echo "== no Upscale-A-Video weights found (see docs/weights.md): running the SELF-CHECK instead."
echo "   Tiny RANDOM networks run through every stage; the output is noise and NOT an upscale."
if [ ! -f "$OUT/tiny_random_release/UAV_TINY_RANDOM_WEIGHTS" ]; then
  "$PY" -c "import sys; from uav.testing import make_tiny_release; make_tiny_release(sys.argv[1])" \
    "$OUT/tiny_random_release" 2>/dev/null
fi
"$UAV" upscale "$OUT/sample.mp4" -o "$OUT/sample_uav.mp4" --weights "$OUT/tiny_random_release" --self-check \
  --steps 2 --propagation-steps 1 --color-fix wavelet --seed 0

# A picture of what ran: input frames (shown x4) above the self-check output, captioned as such.
"$PY" - "$OUT" <<'EOF'
import sys
from pathlib import Path

from uav.io import read_frames
from uav.eval.report import frame_strip, write_png

out = Path(sys.argv[1])
source = read_frames(out / "sample.mp4")
result = read_frames(out / "sample_uav_selfcheck_random.mp4")
# shown at 128x96 each to keep the picture small
strip = frame_strip({"input 64x48, enlarged": source,
                     "SELF-CHECK output (random network): NOT an upscale": result},
                    frames=[0, 11, 23], size=(96, 128))
print(f"== frames side by side: {write_png(out / 'sample_selfcheck_frames.png', strip)}")
EOF
echo "== self-check finished: every stage ran. For a real upscale, get the weights (docs/weights.md) and rerun."
