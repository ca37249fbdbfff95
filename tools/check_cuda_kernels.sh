#!/usr/bin/env bash
# Compile-check the torch-free CUDA kernels (csrc/kernels/*.cu) with nvcc alone: no GPU and no CUDA
# build of torch needed. Used by CI on machines with nvcc but a CPU torch; the torch glue
# (csrc/ops/*_cuda.cpp) is compiled on a GPU machine by setup.py.
#
#   tools/check_cuda_kernels.sh            # sm_90 + sm_80, prints OK per file
#   NVCC=/path/to/nvcc VOXRENDER_CHECK_ARCHS="90 80 75" tools/check_cuda_kernels.sh
#   VOXRENDER_CHECK_RESOURCES=1 tools/check_cuda_kernels.sh   # also print ptxas registers/spills
#
# Exit status: 0 when every file compiles (or when nvcc is missing: nothing to check), 1 otherwise.
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NVCC="${NVCC:-}"
if [ -z "$NVCC" ]; then
  if command -v nvcc >/dev/null 2>&1; then
    NVCC="$(command -v nvcc)"
  elif [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then
    NVCC="$CUDA_HOME/bin/nvcc"
  elif [ -x /usr/local/cuda/bin/nvcc ]; then
    NVCC=/usr/local/cuda/bin/nvcc
  fi
fi
if [ -z "$NVCC" ] || ! [ -x "$NVCC" ]; then
  echo "check_cuda_kernels: nvcc not found (set NVCC or CUDA_HOME); skipping the CUDA compile check"
  exit 0
fi

ARCHS="${VOXRENDER_CHECK_ARCHS:-90 80}"
GENCODE=()
for a in $ARCHS; do GENCODE+=(-gencode "arch=compute_${a},code=sm_${a}"); done
EXTRA=()
if [ "${VOXRENDER_CHECK_RESOURCES:-0}" = "1" ]; then EXTRA+=(--resource-usage); fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/voxrender_nvcc.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

echo "check_cuda_kernels: $("$NVCC" --version | tail -n 1), archs: $ARCHS"
shopt -s nullglob
files=("$ROOT"/csrc/kernels/*.cu)
if [ ${#files[@]} -eq 0 ]; then
  echo "check_cuda_kernels: no csrc/kernels/*.cu files"
  exit 0
fi

status=0
for f in "${files[@]}"; do
  rel="${f#"$ROOT"/}"
  obj="$TMP/$(basename "$f" .cu).o"
  # Same language flags as setup.py's nvcc build (minus -O3, which does not affect validity).
  if "$NVCC" -c -std=c++17 -DVOXRENDER_WITH_CUDA -I "$ROOT/csrc/include" -I "$ROOT/csrc/kernels" \
      "${GENCODE[@]}" "${EXTRA[@]}" -Werror all-warnings -o "$obj" "$f" >"$TMP/log" 2>&1; then
    echo "OK   $rel"
    if [ "${VOXRENDER_CHECK_RESOURCES:-0}" = "1" ]; then grep -E "Compiling entry|Used|spill" "$TMP/log"; fi
  else
    echo "FAIL $rel"
    sed 's/^/    /' "$TMP/log"
    status=1
  fi
done

# The torch glue of the CUDA backend (csrc/ops/*_cuda.cpp), syntax-checked by the host compiler against
# the installed torch's headers. A CPU torch wheel ships c10/cuda and ATen/cuda headers but not the
# generated c10/cuda/impl/cuda_cmake_macros.h, so an empty stand-in is put on the include path.
PY=${PYTHON:-python3}
if TORCH_INC=$("$PY" -c "from torch.utils.cpp_extension import include_paths; print(' '.join(include_paths()))" 2>/dev/null); then
  # The toolkit's include folder: $CUDA_HOME, else where nvcc really lives (it may be a wrapper script
  # elsewhere on PATH), asked from nvcc itself.
  CUDA_INC="${CUDA_HOME:+$CUDA_HOME/include}"
  if [ -z "$CUDA_INC" ] || [ ! -f "$CUDA_INC/cuda_runtime.h" ]; then
    CUDA_INC="$("$NVCC" -E -x cu - -M </dev/null 2>/dev/null | tr ' ' '\n' | grep -m1 '/cuda_runtime.h$' | xargs -r dirname)"
  fi
  mkdir -p "$TMP/stub/c10/cuda/impl" && : >"$TMP/stub/c10/cuda/impl/cuda_cmake_macros.h"
  PY_INC=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
  incs=(-I "$TMP/stub" -I "$ROOT/csrc/include" -I "$ROOT/csrc/kernels" -I "$CUDA_INC" -I "$PY_INC")
  for d in $TORCH_INC; do incs+=(-I "$d"); done
  for f in "$ROOT"/csrc/ops/*_cuda.cpp; do
    rel="${f#"$ROOT"/}"
    # Compiled to an object (not just -fsyntax-only) so that its calls into the kernels can be matched
    # against the kernels' explicit instantiations below.
    if "${CXX:-g++}" -c -O0 -std=c++20 -DVOXRENDER_WITH_CUDA -DTORCH_EXTENSION_NAME=_C "${incs[@]}" "$f" \
        -o "$TMP/glue_$(basename "$f" .cpp).o" \
        >"$TMP/log" 2>&1; then
      echo "OK   $rel (host compile check against torch's headers)"
    else
      echo "FAIL $rel"
      sed 's/^/    /' "$TMP/log"
      status=1
    fi
  done
  # Every launcher the glue calls (voxrender::cuda::*) must be defined by some kernel object with the same
  # template arguments and signature: a mismatch would otherwise surface only when linking on a GPU machine.
  if command -v nm >/dev/null 2>&1; then
    shopt -s nullglob
    kobjs=() gobjs=()
    for f in "${files[@]}"; do [ -f "$TMP/$(basename "$f" .cu).o" ] && kobjs+=("$TMP/$(basename "$f" .cu).o"); done
    for o in "$TMP"/glue_*.o; do gobjs+=("$o"); done
    if [ ${#kobjs[@]} -gt 0 ] && [ ${#gobjs[@]} -gt 0 ]; then
      nm -C --defined-only "${kobjs[@]}" 2>/dev/null | grep -o 'voxrender::cuda::.*' | sort -u >"$TMP/defined"
      nm -C --undefined-only "${gobjs[@]}" 2>/dev/null | grep -o 'voxrender::cuda::.*' | sort -u >"$TMP/needed"
      missing=$(comm -23 "$TMP/needed" "$TMP/defined")
      if [ -n "$missing" ]; then
        echo "FAIL launchers called by the glue but not instantiated in csrc/kernels/*.cu:"
        echo "$missing" | sed 's/^/    /'
        status=1
      else
        echo "OK   $(wc -l <"$TMP/needed") launcher instantiations called by the glue are defined by the kernels"
      fi
    fi
  fi
else
  echo "check_cuda_kernels: torch not importable, skipping the glue syntax check"
fi
exit $status
