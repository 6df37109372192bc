/**
 * The peer baseline of `awq bench gemm`: ONNX Runtime's `com.microsoft.MatMulNBits` (4 bits,
 * asymmetric, packed zero points) through `onnxruntime-node`, a devDependency loaded on demand.
 * The one-node ONNX model is encoded here as protobuf bytes (a dozen message types of onnx.proto)
 * so nothing is read from disk or the network.
 */

// ---- minimal protobuf writer (wire types 0 = varint, 2 = length-delimited) ----
type Part = Uint8Array;

function varint(v: number): Uint8Array {
  const out: number[] = [];
  let n = v;
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return Uint8Array.from(out);
}
function concat(parts: Part[]): Uint8Array {
  const len = parts.reduce((s, p) => s + p.length, 0);
  const out = new Uint8Array(len);
  let o = 0;
  for (const p of parts) out.set(p, (o += p.length) - p.length);
  return out;
}
const int = (field: number, v: number): Part => concat([varint(field * 8), varint(v)]);
const bytes = (field: number, b: Uint8Array): Part => concat([varint(field * 8 + 2), varint(b.length), b]);
const str = (field: number, s: string): Part => bytes(field, new TextEncoder().encode(s));
const msg = (field: number, parts: Part[]): Part => bytes(field, concat(parts));

const FLOAT = 1;
const UINT8 = 2;

// TensorProto: dims = 1, data_type = 2, name = 8, raw_data = 9
function tensor(name: string, type: number, dims: number[], raw: Uint8Array): Part {
  return msg(5, [...dims.map((d) => int(1, d)), int(2, type), str(8, name), bytes(9, raw)]);
}
// ValueInfoProto { name = 1, type = 2: TypeProto { tensor_type = 1 { elem_type = 1, shape = 2 { dim = 1 } } } }
function valueInfo(field: number, name: string, dims: Array<number | string>): Part {
  const dim = (d: number | string) => msg(1, [typeof d === 'number' ? int(1, d) : str(2, d)]);
  return msg(field, [str(1, name), msg(2, [msg(1, [int(1, FLOAT), msg(2, dims.map(dim))])])]);
}
// AttributeProto { name = 1, i = 3, type = 20 (INT = 2) }
const intAttr = (name: string, v: number): Part => msg(5, [str(1, name), int(3, v), int(20, 2)]);

export interface MatMulNBitsWeights {
  /** [N, K/block, block/2]: two 4-bit values per byte, the lower k in the low nibble. */
  b: Uint8Array;
  /** [N * K/block] fp32. */
  scales: Float32Array;
  /** [N * ceil((K/block) / 2)]: two 4-bit zero points per byte, low nibble first. */
  zeroPoints: Uint8Array;
}

/** Re-lays out our quantizer-form weights (q [N,K], zeros/scales [N,K/g]) for MatMulNBits. */
export function toMatMulNBits(q: Uint8Array, zeros: Uint8Array, scales: Float32Array, n: number, k: number, group: number): MatMulNBitsWeights {
  const blocks = k / group;
  const b = new Uint8Array((n * k) / 2);
  for (let i = 0; i < n * k; i += 2) b[i >> 1] = q[i] | (q[i + 1] << 4);
  const zpRow = Math.ceil(blocks / 2);
  const zeroPoints = new Uint8Array(n * zpRow);
  for (let r = 0; r < n; r++)
    for (let j = 0; j < blocks; j++) zeroPoints[r * zpRow + (j >> 1)] |= zeros[r * blocks + j] << ((j & 1) * 4);
  return { b, scales: Float32Array.from(scales), zeroPoints };
}

/** Bytes of a one-node model computing Y[M, N] = A[M, K] * dequant(B)^T. */
export function matMulNBitsModel(w: MatMulNBitsWeights, n: number, k: number, group: number, accuracyLevel: number): Uint8Array {
  const blocks = k / group;
  const u8 = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const node = msg(1, [
    str(1, 'A'), str(1, 'B'), str(1, 'scales'), str(1, 'zero_points'), str(2, 'Y'),
    str(3, 'matmul_nbits'), str(4, 'MatMulNBits'), str(7, 'com.microsoft'),
    intAttr('K', k), intAttr('N', n), intAttr('bits', 4), intAttr('block_size', group), intAttr('accuracy_level', accuracyLevel),
  ]);
  const graph = msg(7, [
    node,
    str(2, 'awq_bench'),
    tensor('B', UINT8, [n, blocks, group / 2], w.b),
    tensor('scales', FLOAT, [n * blocks], u8(w.scales)),
    tensor('zero_points', UINT8, [w.zeroPoints.length], w.zeroPoints),
    valueInfo(11, 'A', ['M', k]),
    valueInfo(12, 'Y', ['M', n]),
  ]);
  // ModelProto { ir_version = 1, producer_name = 2, graph = 7, opset_import = 8 { domain = 1, version = 2 } }
  return concat([int(1, 8), str(2, 'awq-bench'), graph, msg(8, [str(1, ''), int(2, 17)]), msg(8, [str(1, 'com.microsoft'), int(2, 1)])]);
}

interface OrtTensor {
  data: unknown;
}
interface OrtSession {
  run(feeds: Record<string, unknown>): Promise<Record<string, OrtTensor>>;
  release?(): Promise<void>;
}
export interface Ort {
  version: string;
  InferenceSession: { create(model: Uint8Array, options: Record<string, unknown>): Promise<OrtSession> };
  Tensor: new (type: string, data: Float32Array, dims: number[]) => unknown;
}

/** onnxruntime-node when installed (a devDependency), else the reason it is not usable. */
export async function loadOrt(): Promise<Ort | string> {
  try {
    const mod = (await import('onnxruntime-node' as string)) as { default?: Ort } & Ort & { env: { versions: { node: string } } };
    const ort = (mod.default ?? mod) as Ort & { env: { versions: { node: string } } };
    return { version: ort.env.versions.node, InferenceSession: ort.InferenceSession, Tensor: ort.Tensor };
  } catch (err) {
    return `onnxruntime-node is not installed (a devDependency of awq): ${(err as Error).message.split('\n')[0]}`;
  }
}

/** A MatMulNBits session with its own copy of the weights; `run(x, m)` returns Y. */
export async function ortMatMulNBits(ort: Ort, modelBytes: Uint8Array, threads: number) {
  const session = await ort.InferenceSession.create(modelBytes, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    // ORT's pool threads spin after each run by default; in a benchmark that interleaves its
    // calls with ours, the spinning threads would steal the cores from the next impl's call.
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  });
  return {
    async run(x: Float32Array, m: number, kDim: number): Promise<Float32Array> {
      const out = await session.run({ A: new ort.Tensor('float32', x, [m, kDim]) });
      return out.Y.data as Float32Array;
    },
    release: () => session.release?.(),
  };
}
