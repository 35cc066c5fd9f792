#!/usr/bin/env bash
# Builds the CUDA kernel library's test suite and benchmark (Release, sm_90a) into
# ${BUILD_DIR:-build} and copies them, libfluxattn and the non-system shared libraries they load
# (stripped; the CUDA toolkit's own libraries are left to the target's /usr/local/cuda) into DEST, with the scripts that run them there:
#   tools/bundle-cuda-kernels.sh DEST     then on the GPU machine, from the repository root:
#   DEST/test-gpu-kernels.sh DEST && DEST/bench-gpu.sh DEST OUTDIR
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
dest="${1:?usage: bundle-cuda-kernels.sh DEST}"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLUXATTN_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES:-90a}" >/dev/null
cmake --build "$build" -j "${JOBS:-2}" --target fluxattn_cuda_kernel_tests bench_cuda
mkdir -p "$dest/lib"
cp "$build/bin/fluxattn_cuda_kernel_tests" "$build/bin/bench_cuda" "$dest/"
cp "$root/tools/test-gpu-kernels.sh" "$root/tools/bench-gpu.sh" "$root/tools/bench_gpu_peers.py" \
  "$dest/"
for elf in "$dest/fluxattn_cuda_kernel_tests" "$dest/bench_cuda"; do
  ldd "$elf" | awk '/=> \// { print $3 }' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | ld-linux* | libstdc++.so* | \
        libgcc_s.so* | libcuda.so* | libnvidia* | libcublas* | libcudart* | libcudnn*) continue ;;
    esac
    cp -L "$lib" "$dest/lib/"
  done
done
strip --strip-unneeded "$dest"/lib/*.so* "$dest/fluxattn_cuda_kernel_tests" "$dest/bench_cuda" \
  2>/dev/null || true
du -sh "$dest"
