#!/usr/bin/env bash
# test_bundle_chroot.sh — gpu-bundle/ is self-contained: its run.sh passes in a bare Debian 12.
#
# Makes a bundle with scripts/gpu-bundle.sh from this build (into $SL_BINARY_DIR/gpu-bundle-test,
# so a user's gpu-bundle/ is left alone), and a minimal Debian 12 (debootstrap --variant=minbase)
# with nothing of ours in it, only what mirrors the GPU machine's Python: python3, python3-numpy,
# python3-h5py (cached in $SL_BINARY_DIR/bundle-chroot, so later runs take seconds). It checks that
# the chroot has none of the libraries the bundle carries or takes from the GPU machine (Open MPI,
# PMIx, hwloc, libevent, parallel HDF5, BLIS/OpenBLAS, cJSON, inih, utf8proc, CUDA, NCCL; PCRE2's
# 8-bit library is there, as grep needs it in every Debian), then runs run.sh inside it (private mounts of /proc, /sys and /dev/shm,
# an empty environment) and passes only when run.sh exits 0, every CPU step PASSed and every GPU
# step (test_cuda_ops, tp2 one GPU, nccl 1-rank, bench) SKIPped.
# Exit 77 (ctest: skipped) with the reason where it cannot run: not root, no debootstrap, no
# network for the first debootstrap, no nvcc or a build that is not Release + CUDA sm_80;90.
#
# Run: ctest -L bundle   (SL_SOURCE_DIR, SL_BINARY_DIR; SL_DEBIAN_MIRROR picks the mirror,
#      SL_BUNDLE_CHROOT the chroot's folder)
set -uo pipefail
SRC=${SL_SOURCE_DIR:?set SL_SOURCE_DIR}
BIN=${SL_BINARY_DIR:?set SL_BINARY_DIR}
ROOTFS=${SL_BUNDLE_CHROOT:-$BIN/bundle-chroot} # a folder kept between builds makes CI runs fast
BUNDLE=$BIN/gpu-bundle-test
skip() { echo "skipped: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, chroot, mounts)"
command -v debootstrap >/dev/null || skip "debootstrap is not installed (scripts/install-deps.sh installs it)"
command -v unshare >/dev/null || skip "unshare (util-linux) is missing"
command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || skip "no nvcc: the bundle carries the CUDA build"
cache=$BIN/CMakeCache.txt
grep -q '^ENABLE_CUDA:BOOL=ON' "$cache" && grep -q '^CMAKE_CUDA_ARCHITECTURES:STRING=80;90$' "$cache" &&
  grep -q '^CMAKE_BUILD_TYPE:STRING=Release$' "$cache" ||
  skip "$BIN is not a Release build with ENABLE_CUDA=ON for 80;90 (the bundle's build)"

t0=$(date +%s)
if [ ! -f "$ROOTFS/.sl-ready" ]; then
  rm -rf "$ROOTFS" "$ROOTFS.tmp"
  echo "debootstrap of Debian 12 minbase into $ROOTFS (about a minute; cached afterwards)"
  if ! debootstrap --variant=minbase --include=python3,python3-numpy,python3-h5py bookworm \
       "$ROOTFS.tmp" "${SL_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$BIN/bundle-debootstrap.log" 2>&1; then
    tail -n 5 "$BIN/bundle-debootstrap.log"
    rm -rf "$ROOTFS.tmp"
    skip "debootstrap failed (offline? log: $BIN/bundle-debootstrap.log)"
  fi
  mv "$ROOTFS.tmp" "$ROOTFS" && touch "$ROOTFS/.sl-ready"
fi
t1=$(date +%s)

# Nothing of ours in the chroot: the bundle must bring it.
ours=$(chroot "$ROOTFS" /sbin/ldconfig -p |
       grep -E 'libmpi\.|libopen-(pal|rte)|libpmix|libhdf5_openmpi|libblis|libopenblas|libcjson|libinih|libutf8proc|libhwloc|libevent_core|libcudart|libcublas|libnccl|libcuda\.' || true)
[ -z "$ours" ] || fail "the chroot holds libraries the bundle must carry: $ours"
for p in openmpi-bin libopenmpi3 libhdf5-openmpi-103 libblis4 libcjson1 libinih1 libutf8proc2; do
  chroot "$ROOTFS" dpkg-query -W "$p" >/dev/null 2>&1 && fail "the chroot has the package $p"
done

SL_BUNDLE_DIR=$BUNDLE SL_BUNDLE_BUILD=$BIN "$SRC/scripts/gpu-bundle.sh" >"$BIN/bundle-make.log" 2>&1 ||
  { tail -n 20 "$BIN/bundle-make.log"; fail "scripts/gpu-bundle.sh failed (log: $BIN/bundle-make.log)"; }
grep -A12 '^gpu-bundle: ' "$BIN/bundle-make.log" | head -n 14
t2=$(date +%s)

rm -rf "$ROOTFS/bundle" "$ROOTFS/out"
cp -a "$BUNDLE" "$ROOTFS/bundle"
mkdir -p "$ROOTFS/out"
unshare --mount --propagation private /bin/sh -c '
  R=$1
  mount -t proc proc "$R/proc" && mount -t sysfs -o ro sysfs "$R/sys" &&
  mkdir -p "$R/dev/shm" && mount -t tmpfs tmpfs "$R/dev/shm" || exit 90
  exec chroot "$R" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root TMPDIR=/tmp OUT=/out \
       /bundle/run.sh' sh "$ROOTFS"
rc=$?
t3=$(date +%s)
[ "$rc" -ne 90 ] || fail "could not mount /proc, /sys or /dev/shm in the chroot"
table=$ROOTFS/out/table.txt
[ -f "$table" ] || fail "run.sh wrote no table (status $rc)"
echo "---- run.sh in the chroot (status $rc):"
cat "$table"
[ "$rc" -eq 0 ] || { cat "$ROOTFS/out/steps.log"; fail "run.sh exited with status $rc"; }

bad=0
while IFS= read -r line; do
  step=$(cut -c1-40 <<<"$line" | sed 's/ *$//')
  status=$(cut -c42-46 <<<"$line" | sed 's/ *$//')
  case $step in
    test_cuda_ops | "tp2 one GPU"* | "nccl 1-rank"* | "bench vs PyTorch")
      [ "$status" = SKIP ] || { echo "FAIL: GPU step '$step' is $status, expected SKIP"; bad=1; } ;;
    *) [ "$status" = PASS ] || { echo "FAIL: CPU step '$step' is $status, expected PASS"; bad=1; } ;;
  esac
done < <(sed -n '3,$p' "$table" | grep -v '^result:')
for want in "environment" "test_bert (cpu)" "test_llama (cpu)" "e2e mlp (cpu)" "e2e bert_embed (cpu)" \
            "e2e llama_score (cpu)" "e2e llama_generate (cpu)" "mpi 2 ranks: mlp tp2 (cpu)" \
            "mpi 2 ranks: llama_score tp2 (cpu)"; do
  grep -q "^$want " "$table" || { echo "FAIL: step '$want' missing from the table"; bad=1; }
done
grep -q 'CUDA stand-ins' "$table" || { echo "FAIL: the chroot has no CUDA libraries, yet run.sh did not use its stand-ins"; bad=1; }
echo "seconds: debootstrap $((t1 - t0)) (0 when cached), bundle $((t2 - t1)), run.sh in the chroot $((t3 - t2))"
[ "$bad" -eq 0 ] || exit 1
echo "test_bundle_chroot: PASS"
