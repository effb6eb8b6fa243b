#!/bin/sh
# Build an fp16 TensorRT engine from model.onnx, on the Jetson itself (engines are not portable
# between GPUs or TensorRT versions). JetPack @JETPACK@: TensorRT @TENSORRT@; the TX2's Pascal GPU
# has no fast int8, so fp16 is its speed path.
#
#   sh build_engine.sh                   # batch 1 to 256, tuned for batch 1
#   MAX_BATCH=64 OPT_BATCH=8 sh build_engine.sh
#   TRTEXEC=/path/to/trtexec sh build_engine.sh
set -eu
cd "$(dirname "$0")"
TRTEXEC="${TRTEXEC:-/usr/src/tensorrt/bin/trtexec}"
if [ ! -x "$TRTEXEC" ]; then
    TRTEXEC="$(command -v trtexec || true)"
fi
if [ -z "$TRTEXEC" ]; then
    echo "build_engine.sh: trtexec not found; it comes with TensorRT (JetPack) at" \
         "/usr/src/tensorrt/bin/trtexec, or set TRTEXEC=/path/to/trtexec" >&2
    exit 1
fi
OPT_BATCH="${OPT_BATCH:-1}"
MAX_BATCH="${MAX_BATCH:-256}"
"$TRTEXEC" --onnx=@MODEL@ --saveEngine=@ENGINE@ --fp16 \
    --minShapes=@INPUT@:1x@N_IN@ \
    --optShapes=@INPUT@:${OPT_BATCH}x@N_IN@ \
    --maxShapes=@INPUT@:${MAX_BATCH}x@N_IN@ \
    --workspace=1024
echo "build_engine.sh: wrote @ENGINE@"
