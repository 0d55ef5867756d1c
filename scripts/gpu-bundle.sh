#!/usr/bin/env bash
# gpu-bundle.sh — makes gpu-bundle/, everything the GPU machine lacks to check shardline's CUDA
# backend in one call that builds nothing: that machine has CUDA 13, the NVIDIA driver and
# Python 3.12 with torch, transformers, h5py and numpy, but none of our Debian packages, no apt
# and no network.
#
# What goes in (the folder is git-ignored; at most 60 MiB, and with the checkout's tracked files
# at most the device call's 64 MiB; both printed at the end). payload.tar.gz holds bin/, lib/,
# ompi/, pmix/ and nogpu/ (packed, it is less than half the size; run.sh unpacks it into a
# temporary folder):
#   bin/      shardline, test_cuda_ops, test_bert, test_llama: a Release build with the CUDA
#             backend for sm_80 and sm_90 (the build folder is configured so when needed);
#   lib/      the ldd closure of every carried program and Open MPI plugin, less glibc,
#             libstdc++/libgcc_s (every glibc system has newer ones) and the CUDA runtime,
#             cuBLAS, cuBLASLt, NCCL and driver libraries, which run.sh takes from the GPU
#             machine's CUDA 13 toolkit and its Python packages (nvidia-cublas, nvidia-nccl-cu13);
#   ompi/     Debian's Open MPI 4.1 made relocatable: orterun (as mpirun), orted, the MCA plugins
#             that need no fabric libraries (UCX, libfabric, verbs, PSM, OpenSHMEM left out),
#             help files and openmpi-mca-params.conf, found through OPAL_PREFIX and friends;
#   pmix/     PMIx's plugins and help files (PMIX_PREFIX);
#   nogpu/    stand-ins for libcudart/libcublas/libnccl for machines with no CUDA library at all
#             (every call answers "no CUDA driver"), so the same binaries run their CPU paths
#             there; never used where a GPU is visible;
#   src/      the tiny models and goldens test_bert, test_llama and the end-to-end jobs read
#             (SL_SOURCE_DIR points here), and the uncased WordPiece tokenizer.json for the
#             benchmark; all-MiniLM-L6-v2 (88 MB) and SmolLM2 (94 MB) do not fit and are not
#             carried: the tests skip those parts with SL_SKIP_MODELS and say so;
#   e2e/      the end-to-end jobs' inputs and their CPU results (computed here by
#             `run.sh --make-reference`, on --device cpu);
#   run.sh, compare_outputs.py, bench_gpu.py: the check itself (scripts/gpu-bundle-run.sh,
#             scripts/gpu-bundle-compare.py, bench/bench_gpu.py).
#
# Run: scripts/gpu-bundle.sh     (from anywhere; needs nvcc and scripts/install-deps.sh's packages)
#      SL_BUNDLE_BUILD=DIR picks the build folder (default build/), SL_BUNDLE_DIR=DIR the
#      bundle's folder (default gpu-bundle/; the device call carries only folders of the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${SL_BUNDLE_BUILD:-$ROOT/build}
B=${SL_BUNDLE_DIR:-$ROOT/gpu-bundle}
LIMIT_MIB=60

die() { echo "gpu-bundle: $*" >&2; exit 1; }

# ---- 1. the build: Release, CUDA backend for sm_80 and sm_90 --------------------------------
command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] ||
  die "nvcc not found: the bundle carries the CUDA backend, so CUDA 13 must be installed here"
cache=$BUILD/CMakeCache.txt
if ! grep -q '^ENABLE_CUDA:BOOL=ON' "$cache" 2>/dev/null ||
   ! grep -q '^CMAKE_CUDA_ARCHITECTURES:STRING=80;90$' "$cache" ||
   ! grep -q '^CMAKE_BUILD_TYPE:STRING=Release$' "$cache"; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DENABLE_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES="80;90" >/dev/null
fi
cmake --build "$BUILD" -j"$(nproc)" --target shardline test_cuda_ops test_bert test_llama

# ---- 2. programs ----------------------------------------------------------------------------
# The programs and libraries are gathered in $P, then packed into $B/payload.tar.gz.
rm -rf "$B"
P=$B/payload
mkdir -p "$P"/{bin,lib,ompi/bin,ompi/lib/openmpi3,ompi/share/openmpi,ompi/etc,pmix/lib/pmix,pmix/share/pmix} "$B"/{src,e2e}
cp "$BUILD/shardline" "$BUILD"/tests/{test_cuda_ops,test_bert,test_llama} "$P/bin/"
strip --strip-unneeded "$P"/bin/*

# ---- 3. Open MPI and PMIx -------------------------------------------------------------------
ompi_lib=$(dirname "$(readlink -f "$(ldd "$P/bin/shardline" | awk '/libmpi\.so/{print $3}')")")
pkglib=$(ompi_info --path pkglibdir --parsable 2>/dev/null | sed -n 's/^path:pkglibdir://p')
pkgdata=$(ompi_info --path pkgdatadir --parsable 2>/dev/null | sed -n 's/^path:pkgdatadir://p')
sysconf=$(ompi_info --path sysconfdir --parsable 2>/dev/null | sed -n 's/^path:sysconfdir://p')
[ -d "$pkglib" ] && [ -d "$pkgdata" ] || die "Open MPI's plugin/help folders not found (ompi_info)"
cp -L "$(command -v orterun)" "$P/ompi/bin/orterun"
cp -L "$(command -v orterun)" "$P/ompi/bin/mpirun"
cp -L "$(command -v orted)" "$P/ompi/bin/orted"
# Plugins that load fabric or OpenSHMEM libraries are left out: one GPU node needs shared memory
# (vader) and TCP only, and those libraries would triple the bundle.
skip='liboshmem|libuc[pstm]\.|libfabric|libibverbs|librdmacm|libpsm|libmca_common_(ucx|ofi|verbs)|libnl-|libinfinipath|libefa|libpmi2?\.|libslurm|libjvm|libjava'
for f in "$pkglib"/*.so; do
  deps=$(ldd "$f" 2>/dev/null || true) # (not piped into grep -q: pipefail and SIGPIPE)
  if grep -qE "$skip" <<<"$deps"; then continue; fi
  cp -L "$f" "$P/ompi/lib/openmpi3/"
done
cp -L "$pkgdata"/help-*.txt "$pkgdata"/openmpi-default-hostfile "$P/ompi/share/openmpi/" 2>/dev/null || true
cp -L "$sysconf"/openmpi-mca-params.conf "$P/ompi/etc/"
pmix_so=$(ldd "$P"/ompi/lib/openmpi3/mca_pmix_*.so |
          awk '/libpmix\.so/{print $3}' | head -n 1 || true)
[ -n "$pmix_so" ] || die "Open MPI's PMIx plugin (mca_pmix_ext3x) or libpmix not found"
pmix_prefix=$(dirname "$(dirname "$(readlink -f "$pmix_so")")")
if [ -d "$pmix_prefix/lib/pmix" ]; then cp -L "$pmix_prefix"/lib/pmix/*.so "$P/pmix/lib/pmix/"; fi
if [ -d "$pmix_prefix/share/pmix" ]; then cp -L "$pmix_prefix"/share/pmix/* "$P/pmix/share/pmix/"; fi

# ---- 4. the library closure -----------------------------------------------------------------
# Left out: glibc (and libcrypt, part of every base system), libstdc++ and libgcc_s (base
# packages everywhere, and an older copy on LD_LIBRARY_PATH would shadow the newer one CUDA's
# libraries need), the CUDA runtime, cuBLAS(Lt), NCCL and the driver (from the GPU machine).
system_re='^(linux-vdso|ld-linux|libc|libm|libmvec|libpthread|libdl|librt|libresolv|libutil|libanl|libnsl|libcrypt|libstdc\+\+|libgcc_s)\.so'
cuda_re='^(libcudart|libcublas|libcublasLt|libnccl|libcuda|libnvidia-)'
mapfile -t elves < <(find "$P/bin" "$P/ompi/bin" "$P/ompi/lib/openmpi3" "$P/pmix/lib/pmix" -type f)
missing=()
for f in "${elves[@]}"; do
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    [[ $name =~ $system_re || $name =~ $cuda_re ]] && continue
    if [ "$path" = "not" ]; then missing+=("$name (for $(basename "$f"))"); continue; fi
    [ -e "$P/lib/$name" ] || cp -L "$path" "$P/lib/$name"
  done < <(ldd "$f")
done
[ ${#missing[@]} -eq 0 ] || die "libraries not found here: ${missing[*]}"
strip --strip-unneeded "$P"/lib/*.so* "$P"/ompi/lib/openmpi3/*.so "$P"/pmix/lib/pmix/*.so 2>/dev/null || true

# ---- 5. stand-ins for CUDA's libraries, for machines with none ------------------------------
# The carried programs need libcudart, libcublas and libnccl to start at all. Where run.sh finds
# no CUDA libraries (the bare-chroot check; a CPU machine), it puts these in their place: every
# function answers "no CUDA driver" (cudaErrorInsufficientDriver, 35; strings for the *String
# calls), which is what the real libraries answer on a machine without a GPU, so the same
# binaries run their CPU paths. run.sh never uses them where a GPU is visible.
mkdir -p "$P/nogpu"
for pair in 'libcudart.so.13:_*cuda[A-Z]' libcublas.so.13:cublas libnccl.so.2:nccl; do
  so=${pair%%:*} pat=${pair##*:}
  c=$BUILD/nogpu-$so.c
  { echo "/* $so stand-in made by scripts/gpu-bundle.sh: every call fails as without a driver. */"
    nm -D --undefined-only "$P"/bin/* | awk '{print $2}' | sed 's/@.*//' | sort -u |
      grep -E "^${pat}" | while read -r fn; do
        case $fn in
          *String) printf 'const char *%s(void) { return "no CUDA library (shardline gpu-bundle stand-in)"; }\n' "$fn" ;;
          __cudaRegisterFatBinary) echo "static void *h_[4]; void **$fn(void) { return h_; }" ;;
          *) echo "int $fn(void) { return 35; }" ;;
        esac
      done
  } >"$c"
  if [[ $so == libnccl* ]]; then
    gcc -shared -fPIC -O1 -Wl,-soname,"$so" -o "$P/nogpu/$so" "$c"
  else # versioned like the real one: the programs ask for symbol version "$so"
    echo "$so { global: *; };" >"$c.map"
    gcc -shared -fPIC -O1 -Wl,-soname,"$so" -Wl,--version-script="$c.map" -o "$P/nogpu/$so" "$c"
  fi
done

# ---- 6. data: tiny models, goldens, the benchmark's tokenizer --------------------------------
S=$B/src/tests/reference
mkdir -p "$S/goldens" "$S/tiny_llama"
cp -r tests/reference/tiny_bert_cls "$S/"
cp -r tests/reference/tiny_llama/. "$S/tiny_llama/"
cp tests/reference/goldens/{tiny_llama_goldens.h5,tiny_cls_goldens.h5} "$S/goldens/"
# bert-base-uncased's WordPiece vocabulary (MiniLM carries the same tokenizer.json)
cp tests/reference/tiny_bert_cls/tokenizer.json "$B/bert-base-uncased-tokenizer.json"

# ---- 7. scripts, inputs and the CPU reference results ----------------------------------------
cp scripts/gpu-bundle-run.sh "$B/run.sh"
cp scripts/gpu-bundle-compare.py "$B/compare_outputs.py"
cp bench/bench_gpu.py "$B/bench_gpu.py"
chmod +x "$B/run.sh"
git -C "$ROOT" describe --always --dirty >"$B/VERSION" 2>/dev/null || echo unknown >"$B/VERSION"
/usr/bin/python3 scripts/gpu-bundle-compare.py --make-inputs "$B"
# The newest glibc symbol version any carried file needs: run.sh compares it with the machine's.
find "$P" -type f \( -name '*.so*' -o -path '*/bin/*' \) -exec objdump -T {} + 2>/dev/null |
  grep -o 'GLIBC_2\.[0-9]*' | sort -t. -k2 -n -u | tail -n 1 | sed 's/GLIBC_//' >"$P/GLIBC_NEEDED"
echo "gpu-bundle: the carried programs need glibc $(cat "$P/GLIBC_NEEDED") or newer"
unpacked=$(du -sb "$P"/* | sort -rn | awk '{printf "    %6.1f MiB  %s\n", $1/1048576, $2}')
tar -czf "$B/payload.tar.gz" -C "$P" .
rm -rf "$P"
"$B/run.sh" --make-reference

# ---- 8. size ---------------------------------------------------------------------------------
total=$(du -sb "$B" | cut -f1)
echo
echo "gpu-bundle: $B: $(( total / 1024 / 1024 )) MiB ($total bytes); biggest parts:"
du -sb "$B"/* | sort -rn | head -8 | awk '{printf "  %6.1f MiB  %s\n", $1/1048576, $2}'
echo "  payload.tar.gz unpacked:"
echo "$unpacked"
echo "  biggest files:"
find "$B" -type f -printf '%s %p\n' | sort -rn | head -8 | awk '{printf "  %6.1f MiB  %s\n", $1/1048576, $2}'
# The device call carries the checkout's tracked files too, 64 MiB in all.
tree=$(git -C "$ROOT" ls-files -z | (cd "$ROOT" && xargs -0 du -cb 2>/dev/null) | awk 'END {print $1}')
echo "  with the checkout's tracked files ($(( ${tree:-0} / 1024 / 1024 )) MiB): $(( (total + ${tree:-0}) / 1024 / 1024 )) MiB of the device call's 64"
[ "$total" -le $(( LIMIT_MIB * 1024 * 1024 )) ] || die "the bundle is over ${LIMIT_MIB} MiB"
[ $(( total + ${tree:-0} )) -le $(( 64 * 1024 * 1024 )) ] ||
  die "the bundle and the tracked files are over the device call's 64 MiB"
