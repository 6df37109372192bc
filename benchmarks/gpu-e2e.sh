#!/usr/bin/env bash
# End-to-end check of `awq quantize --backend cuda` (issue 6) on a GPU machine without Node.js.
#
#   bash benchmarks/gpu-e2e.sh pack      # here: a CUDA addon build (npm run build:cuda) and dist/
#                                        #   must exist; writes .gpu/e2e/ (Node, the package, ../shared)
#   bash benchmarks/gpu-e2e.sh run       # there, from the repository root, with .gpu/e2e carried:
#                                        #   unpacks, then quantizes llama-22m with AWQ at w4 and w3 on
#                                        #   CUDA in fp32 and bf16 and evaluates the first 64 windows
#                                        #   (benchmarks/quality.mjs), and checks Int4Linear on CUDA
#                                        #   against the CPU (benchmarks/cuda-int4-check.mjs) and
#                                        #   `awq bench cuda-gemm --quick`, `awq eval --backend cuda`
#                                        #   against the CPU, and `quantize --resume` on CUDA
#                                        #   (benchmarks/resume-check.mjs); reports and tables to $OUT
#
# .gpu/e2e holds node.xz (this machine's node, xz-compressed: ~24 MB), awq.node.xz (the CUDA
# addon), pkg/ (dist, package.json, production node_modules) and shared.tar.xz (llama-22m,
# calib.jsonl, eval.txt: ~32 MB); together they stay under the device tool's 64 MiB. .gpu/ is
# git-ignored, so it travels only when carried.
set -euo pipefail
cd "$(dirname "$0")/.."
E=.gpu/e2e

pack() {
  local addon=build-cuda/Release/awq.node
  [ -f "$addon" ] || { echo "no $addon: run npm run build:cuda first" >&2; exit 1; }
  [ -f dist/cli/main.js ] || { echo "no dist/: run npm run build:ts first" >&2; exit 1; }
  # A build older than its sources would send a stale addon or dist/ for the device's minutes.
  local stale
  stale=$(find native CMakeLists.txt package.json -path native/tests -prune -o -type f -newer "$addon" -print | head -5)
  [ -z "$stale" ] || { echo "$addon is older than: $stale ... (run npm run build:cuda)" >&2; exit 1; }
  stale=$(find lib tsconfig.json -newer dist/cli/main.js -type f | head -5)
  [ -z "$stale" ] || { echo "dist/ is older than: $stale ... (run npm run build:ts)" >&2; exit 1; }
  rm -rf "$E/pkg" && mkdir -p "$E/pkg/build-cuda/Release" "$E/pkg/benchmarks"
  cp -r dist package.json "$E/pkg/"
  # stripped and compressed (the 64 MiB limit is close): unpacked by `run`
  strip --strip-unneeded -o "$E/awq.node" "$addon" && xz -T0 -6 -f "$E/awq.node"
  cp benchmarks/quality.mjs benchmarks/cuda-int4-check.mjs benchmarks/resume-check.mjs "$E/pkg/benchmarks/"
  npm ls --omit=dev --parseable --all 2>/dev/null | tail -n +2 | while read -r dir; do
    rel=${dir#"$PWD/"}
    [ "$rel" = node_modules/node-addon-api ] && continue  # C++ headers for the build only
    mkdir -p "$E/pkg/$(dirname "$rel")" && cp -r "$rel" "$E/pkg/$rel"
  done
  [ -f "$E/node.xz" ] || xz -T0 -6 -c "$(command -v node)" > "$E/node.xz"
  [ -f "$E/shared.tar.xz" ] || tar -C ../shared -cf - models/llama-22m data/calib.jsonl data/eval.txt | xz -T0 -6 > "$E/shared.tar.xz"
  du -sh "$E" "$E"/*
}

run() {
  local out=${OUT:-$E/results}
  mkdir -p "$out" /tmp/awq-node
  out=$(cd "$out" && pwd)  # absolute: used after the cd below
  xz -dc "$E/node.xz" > /tmp/awq-node/node && chmod +x /tmp/awq-node/node
  export PATH=/tmp/awq-node:$PATH
  xz -dc "$E/awq.node.xz" > "$E/pkg/build-cuda/Release/awq.node"
  mkdir -p "$E/shared" && tar -C "$E/shared" -xJf "$E/shared.tar.xz"  # ../shared as seen from $E/pkg
  cd "$E/pkg"
  node dist/cli/main.js doctor
  node benchmarks/cuda-int4-check.mjs | tee "$out/cuda-int4-check.txt" || echo "cuda-int4-check failed (exit $?)"
  # `awq bench cuda-gemm` from Node (the kernels awq_cuda_bench times, through the addon)
  node dist/cli/main.js bench cuda-gemm --quick --json > "$out/bench-cuda-gemm.json" &&
    node -e 'const r = require(process.argv[1]); for (const x of r.records) console.log(x.m, x.k + "x" + x.n, x.impl, x.medianMs.toFixed(4), "ms", (100 * x.shareOfCopyBandwidth).toFixed(0) + "% of copy")' "$out/bench-cuda-gemm.json" ||
    echo "awq bench cuda-gemm failed (exit $?)"
  for p in fp32 bf16; do
    node benchmarks/quality.mjs --only awq-w4,awq-w3 --backend cuda --precision "$p" --work "/tmp/awq-q-$p" |
      tee "$out/quality-$p.txt"
    # quality.mjs writes each setting to <work>/<name>-<precision>
    for w in w4 w3; do cp "/tmp/awq-q-$p/awq-$w-$p/awq-report.json" "$out/report-$p-$w.json"; done
  done
  # awq eval on CUDA against the CPU (64 windows): the AWQ w4 checkpoint just written, the dense model
  for m in /tmp/awq-q-fp32/awq-w4-fp32 ../shared/models/llama-22m; do
    for b in cuda cpu; do
      node dist/cli/main.js eval "$m" --text ../shared/data/eval.txt --windows 64 --json --quiet --backend "$b" \
        > "$out/eval-$(basename "$m")-$b.json" 2> "$out/eval-$(basename "$m")-$b.err" ||
        echo "awq eval --backend $b $m failed (exit $?): $(tail -c 600 "$out/eval-$(basename "$m")-$b.err")"
    done
    node -e 'const [g, c] = process.argv.slice(1, 3).map((f) => require(f)); console.log(process.argv[3], "cuda", g.perplexity, g.seconds + " s", "cpu", c.perplexity, c.seconds + " s", "rel diff", Math.abs(g.perplexity / c.perplexity - 1))' \
      "$out/eval-$(basename "$m")-cuda.json" "$out/eval-$(basename "$m")-cpu.json" "$(basename "$m")" || true
  done | tee "$out/eval-cuda.txt"
  # --resume on CUDA: hidden states downloaded after each layer, uploaded again by the next run
  node benchmarks/resume-check.mjs --backend cuda | tee "$out/resume-check.txt" || echo "resume-check failed (exit $?)"
}

case "${1:-}" in
  pack) pack ;;
  run) run ;;
  *) echo "usage: $0 pack|run" >&2; exit 2 ;;
esac
