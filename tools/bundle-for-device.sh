#!/usr/bin/env bash
# Builds FluxAttn (Release, CUDA for sm_90a) into build-device/ and gathers what the GPU machine
# needs to run it into .device-bundle/ (git-ignored): bin/, lib/ (with plugins), the test
# fixture plugins, and the non-system shared libraries the binaries load (Abseil, toml++,
# Boost.Filesystem, PCRE2, ICU, the CUDA runtime, ...), all stripped. glibc, libstdc++ and the
# CUDA driver are left to the target machine, which has newer ones.
#
#   tools/bundle-for-device.sh            then carry .device-bundle and run tools/device-test.sh
# BUNDLE_BINS (space-separated names) keeps only those programs of bin/; with BUNDLE_TAR=1 the
# bundle is also packed as .dev/bundle.tar.xz (a fraction of the size; unpack it on the GPU
# machine with `tar -xJf .dev/bundle.tar.xz` from the repository root).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(realpath -m "${BUILD_DIR:-$root/build-device}")"
bundle="$root/.device-bundle"
limit_mib=64

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLUXATTN_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES:-90a}" "$@" >/dev/null
cmake --build "$build" -j "${JOBS:-$(nproc)}"

rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/lib" "$bundle/deps" "$bundle/fixture_plugins"
cp -a "$build/bin/." "$bundle/bin/"
if [ -n "${BUNDLE_BINS:-}" ]; then
  for f in "$bundle/bin/"*; do
    case " $BUNDLE_BINS " in *" $(basename "$f") "*) ;; *) rm -f "$f" ;; esac
  done
fi
cp -a "$build/lib/." "$bundle/lib/"
if [ -d "$build/tests/fixture_plugins" ]; then
  find "$build/tests/fixture_plugins" -maxdepth 1 -name 'libfluxattn_*.so' \
    -exec cp -a {} "$bundle/fixture_plugins/" \;
fi

# Libraries every Linux target has (and must use its own of).
is_system_lib() {
  case "$(basename "$1")" in
    libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | libresolv.so* | \
      ld-linux* | libstdc++.so* | libgcc_s.so* | libcuda.so* | libnvidia*) return 0 ;;
    # The CUDA toolkit's libraries (half a gigabyte of cuBLASLt): the GPU machine has the same
    # toolkit in /usr/local/cuda, which tools/device-test.sh puts on the library path.
    libcublas*.so* | libcudart.so* | libcudnn*.so* | libnvrtc*.so*) return 0 ;;
  esac
  return 1
}

mapfile -t elves < <(find "$bundle/bin" "$bundle/lib" "$bundle/fixture_plugins" -type f \
  \( -perm -u+x -o -name '*.so*' \))
declare -A copied=()
for elf in "${elves[@]}"; do
  while read -r lib; do
    [ -n "$lib" ] || continue
    is_system_lib "$lib" && continue
    case "$lib" in "$build"/* | "$bundle"/*) continue ;; esac
    name="$(basename "$lib")"
    [ -n "${copied[$name]:-}" ] && continue
    cp -L "$lib" "$bundle/deps/$name"
    copied[$name]=1
  done < <(ldd "$elf" 2>/dev/null | awk '/=> \// { print $3 }')
done

find "$bundle" -type f \( -perm -u+x -o -name '*.so*' \) -exec strip --strip-unneeded {} + \
  2>/dev/null || true
size_kib=$(du -sk "$bundle" | cut -f1)
echo "bundle: $bundle ($((size_kib / 1024)) MiB, ${#copied[@]} shared libraries from the host)"
if ((size_kib > limit_mib * 1024)); then
  echo "bundle-for-device: error: expected a bundle under ${limit_mib} MiB, found $((size_kib / 1024)) MiB" >&2
  exit 1
fi
if [ "${BUNDLE_TAR:-0}" = 1 ]; then
  mkdir -p "$root/.dev"
  tar -C "$root" -cJf "$root/.dev/bundle.tar.xz" .device-bundle
  echo "bundle: packed into $root/.dev/bundle.tar.xz ($(($(stat -c %s "$root/.dev/bundle.tar.xz") / 1048576)) MiB)"
fi
