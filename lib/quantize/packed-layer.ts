/**
 * A quantized decoder layer as the checkpoint receives it: the linears packed into the AWQ GEMM
 * layout (fp16 scales and biases) and the layer's other tensors (norms) in fp32. The pipeline
 * writes it to the output shards and, with `resume`, keeps it in `<out>.resume/` (resume.ts).
 */
import { packAwq, type AwqCheckpointWriter, type AwqLinearTensors } from '../checkpoint/awq-format.js';
import type { Dtype } from '../checkpoint/dtypes.js';
import { NonFiniteError } from '../errors.js';
import { LINEAR_NAMES, type adapterFor } from '../models/adapters.js';
import { native } from '../native.js';
import type { LayerWeights, LinearName, QuantizedLayer } from './layer.js';

export interface PackedLayer {
  linears: AwqLinearTensors[];
  tensors: { name: string; shape: number[]; data: Float32Array }[];
}

async function biasToF16(name: string, bias: Float32Array): Promise<Uint16Array> {
  const out = new Uint16Array(bias.length);
  const r = await native().convertFromF32(bias, 'F16', out);
  if (r.firstNonFinite >= 0 || r.firstOverflow >= 0) {
    throw new NonFiniteError(`${name}.bias: element ${Math.max(r.firstNonFinite, r.firstOverflow)} does not fit fp16 after scale folding`);
  }
  return out;
}

type Adapter = ReturnType<typeof adapterFor>;

/** The names of layer i's linears and of its other tensors, in the order they are written. */
export function layerTensorNames(adapter: Adapter, i: number): { linears: string[]; tensors: string[] } {
  const tensors = [adapter.inputNorm(i), adapter.postNorm(i)];
  const qn = adapter.qNorm(i);
  const kn = adapter.kNorm(i);
  if (qn) tensors.push(qn);
  if (kn) tensors.push(kn);
  return { linears: (LINEAR_NAMES as LinearName[]).map((n) => adapter.linear(i, n)), tensors };
}

/** Packs a quantized layer (the qNorm / kNorm the layer did not change come from `original`). */
export async function packLayer(adapter: Adapter, i: number, result: QuantizedLayer, original: LayerWeights): Promise<PackedLayer> {
  const h = adapter.layerArch.hiddenSize;
  const linears: AwqLinearTensors[] = [];
  for (const name of LINEAR_NAMES as LinearName[]) {
    const l = result.linears[name];
    const packed = await packAwq({
      q: l.q,
      zeros: l.zeros,
      scales: l.scales,
      outFeatures: l.out,
      inFeatures: l.in,
      groupSize: l.groupSize,
    });
    linears.push({
      name: adapter.linear(i, name),
      inFeatures: l.in,
      outFeatures: l.out,
      groupSize: l.groupSize,
      ...packed,
      // A bias the architecture builds but the source lacks is written as zeros: what Transformers
      // starts it at, and what a loader that requires it (vLLM) then finds.
      bias: l.bias ? await biasToF16(adapter.linear(i, name), l.bias) : adapter.biased.has(name) ? new Uint16Array(l.out) : undefined,
    });
  }
  const tensors: PackedLayer['tensors'] = [
    { name: adapter.inputNorm(i), shape: [h], data: result.inputNorm },
    { name: adapter.postNorm(i), shape: [h], data: result.postNorm },
  ];
  const qn = adapter.qNorm(i);
  const kn = adapter.kNorm(i);
  if (qn) tensors.push({ name: qn, shape: [adapter.layerArch.headDim], data: result.qNorm ?? original.qNorm! });
  if (kn) tensors.push({ name: kn, shape: [adapter.layerArch.headDim], data: result.kNorm ?? original.kNorm! });
  return { linears, tensors };
}

/** Appends the layer to the checkpoint: linears, then the other tensors (in the source dtype where kept). */
export async function writePackedLayer(writer: AwqCheckpointWriter, layer: PackedLayer, sourceDtype: (name: string) => Dtype | undefined): Promise<void> {
  for (const l of layer.linears) await writer.addLinear(l);
  for (const t of layer.tensors) await writer.addTensor(t.name, t.shape, t.data, sourceDtype(t.name));
}
