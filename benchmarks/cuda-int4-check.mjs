// Int4Linear on CUDA against Int4Linear on the CPU, for a GPU machine (run by
// `bash benchmarks/gpu-e2e.sh run`; needs a CUDA build and a device):
//   node benchmarks/cuda-int4-check.mjs [--json]
// Random AWQ tensors (group 128 and 64) on decode and prefill sizes; x is drawn as fp16 values, so
// both sides multiply the same activations and differ only by the CUDA kernels' fp16 rounding of
// dequantized weights and their summation order. Prints, per case, the error relative to the
// output's norm (limit 1e-3) and the time per forward call including the host <-> device copies.
// Exit code 1 when a case exceeds the limit, 2 without CUDA.
import { backends, Int4Linear } from '../dist/index.js';

const json = process.argv.includes('--json');
if (backends().cuda === null) {
  console.log(`no CUDA: ${backends().cudaUnavailable}`);
  process.exit(2);
}
let seed = 12345;
const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
function toFp16(v) {  // round to nearest fp16 bits (normal range)
  const s = v < 0 ? 0x8000 : 0, a = Math.abs(v);
  if (a < 2 ** -14) return s;
  let e = Math.floor(Math.log2(a)), m = Math.round((a / 2 ** e - 1) * 1024);
  if (m === 1024) (m = 0), e++;
  return s | ((e + 15) << 10) | m;
}
function fromFp16(h) {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
  return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
}
function awq(inF, outF, group, withBias) {
  const groups = inF / group;
  const qweight = new Int32Array((inF * outF) / 8).map(() => (rand() * 2 ** 32) | 0);
  const qzeros = new Int32Array((groups * outF) / 8).map(() => (rand() * 2 ** 32) | 0);
  const scales = new Uint16Array(groups * outF).map(() => toFp16(0.002 + rand() * 0.02));
  const bias = withBias ? new Uint16Array(outF).map(() => toFp16((rand() - 0.5) * 2)) : undefined;
  return { name: `random ${inF}x${outF} g${group}`, inFeatures: inF, outFeatures: outF, groupSize: group, qweight, qzeros, scales, ...(bias ? { bias } : {}) };
}

const rows = [];
let failed = false;
// m = 1024 and 2048 take the dequantize + dense path; 2048 rows of 11008 outputs (90 MB of y)
// also the per-call x / y buffers; the third shape has a bias.
for (const [inF, outF, group, withBias] of [[4096, 4096, 128, false], [4096, 11008, 128, false], [11008, 4096, 64, true]]) {
  const t = awq(inF, outF, group, withBias);
  const cpu = await Int4Linear.fromAwq(t);
  const gpu = await Int4Linear.fromAwq(t, { device: 'cuda' });
  for (const m of [1, 4, 16, 64, 512, 1024, 2048]) {
    const x = new Float32Array(m * inF).map(() => fromFp16(toFp16((rand() - 0.5) * 4)));
    const yc = await cpu.forward(x, m);
    const yg = await gpu.forward(x, m);
    let num = 0, den = 0;
    for (let i = 0; i < yc.length; i++) {
      num += (yg[i] - yc[i]) ** 2;
      den += yc[i] ** 2;
    }
    const rel = Math.sqrt(num / den);
    const reps = m <= 16 ? 200 : m <= 512 ? 20 : 5;
    const t0 = performance.now();
    for (let r = 0; r < reps; r++) await gpu.forward(x, m, { out: yg });
    const ms = (performance.now() - t0) / reps;
    const ok = rel <= 1e-3;
    failed ||= !ok;
    rows.push({ inF, outF, group, bias: withBias, m, relError: rel, msPerCall: ms, ok });
    if (!json) console.log(`${ok ? 'ok  ' : 'FAIL'} ${inF}x${outF} g${group}${withBias ? ' bias' : ''} m=${m}: error ${rel.toExponential(2)} of |y|, ${ms.toFixed(3)} ms per call (copies included)`);
  }
  await gpu.dispose(); // device memory back now, not at some later garbage collection
  if (gpu.nativeBytes !== 0) throw new Error('dispose left device memory accounted');
}
if (json) console.log(JSON.stringify(rows));
process.exit(failed ? 1 : 0);
