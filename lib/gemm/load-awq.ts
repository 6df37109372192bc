/** `loadAwq(folder)`: an AWQ checkpoint as Int4Linear layers and plain tensors, for a user's own engine. */
import { openAwqCheckpoint, type AwqQuantization } from '../checkpoint/awq-format.js';
import type { Dtype } from '../checkpoint/safetensors.js';
import type { HalfArray } from '../half.js';
import type { ModelConfig } from '../models/config.js';
import { checkControl, ProgressTracker, throwIfAborted, type ProgressEvent } from '../progress.js';
import { checkDevice, optionalBoolean, optionsObject } from '../validate.js';
import { Int4Linear, type Int4Device } from './int4-linear.js';

/** `T`: how the plain tensors come (fp32, or as stored with `widen: false`). */
export interface LoadedAwq<T extends Float32Array | HalfArray = Float32Array> {
  readonly dir: string;
  readonly config: ModelConfig;
  readonly quantization: AwqQuantization;
  /** Quantized linears by module prefix, e.g. `model.layers.0.self_attn.q_proj`. */
  readonly linears: ReadonlyMap<string, Int4Linear>;
  /**
   * Every tensor that is not part of a quantized linear: widened to fp32, or with `widen: false`
   * an fp16 / bf16 one as stored (`{ data: Uint16Array, dtype: 'fp16' | 'bf16' }`).
   */
  readonly tensors: ReadonlyMap<string, T>;
  /** Those tensors' shapes and stored dtypes, as the checkpoint's headers give them. */
  readonly tensorInfo: ReadonlyMap<string, { shape: readonly number[]; dtype: Dtype }>;
  /** Disposes every linear (Int4Linear.dispose: device memory back now on CUDA). */
  dispose(): Promise<void>;
}

/**
 * A `ProgressEvent` (stage 'load', `completed` of `total`, elapsed time and ETA; one listener serves
 * quantize, evaluate and loadAwq) with the tensor or linear just loaded: `name`, and `done` (=
 * completed).
 */
export type LoadProgressEvent = ProgressEvent & { name: string; done: number };

export interface LoadAwqOptions {
  /** Called after each tensor or linear is loaded. */
  onProgress?: (event: LoadProgressEvent) => void;
  /** Where the linears' weights go: 'cpu' (default) or 'cuda' (see Int4Linear). */
  device?: Int4Device;
  /**
   * Keep each linear's AWQ tensors as `layer.awq`, to write the model out again (default false:
   * they would double the memory of the weights, which serving does not need).
   */
  keepAwq?: boolean;
  /** Stops the load between tensors (an `AbortedError`); what was built is disposed. */
  signal?: AbortSignal;
  /**
   * Widen the plain tensors to fp32 (default true). false keeps fp16 / bf16 tensors as stored, at
   * half the memory (Llama 3 8B's embedding and lm_head: 2.1 GB instead of 4.2): `denseGemm` takes
   * one as its `b` (the lm_head product, bitwise the widened one's), `toFloat32` widens rows of one
   * (embedding lookups). Tensors stored otherwise (F32, integers) still come as Float32Array.
   */
  widen?: boolean;
}

/**
 * An AutoAWQ "GEMM" checkpoint (ours or another implementation's) ready to run: every quantized
 * linear as an `Int4Linear` (repacked once, on the CPU or on CUDA per `device`) and every other
 * tensor (embeddings, norms, lm_head) as fp32 or, with `widen: false`, as stored, by name. For `awq eval` and for a user's own engine.
 * A checkpoint with a hole is refused before anything is built. `dispose()` gives the linears'
 * memory back.
 */
export function loadAwq(dir: string, options: LoadAwqOptions & { widen: false }): Promise<LoadedAwq<Float32Array | HalfArray>>;
export function loadAwq(dir: string, options?: LoadAwqOptions & { widen?: true }): Promise<LoadedAwq>;
export function loadAwq(dir: string, options?: LoadAwqOptions): Promise<LoadedAwq<Float32Array | HalfArray>>;
export async function loadAwq(dir: string, loadOptions?: LoadAwqOptions): Promise<LoadedAwq<Float32Array | HalfArray>> {
  const options = optionsObject(loadOptions, 'options');
  const device = checkDevice(options.device);
  const keepAwq = optionalBoolean(options.keepAwq, 'keepAwq') ?? false;
  const widen = optionalBoolean(options.widen, 'widen') ?? true;
  checkControl(options.signal, options.onProgress);
  throwIfAborted(options.signal);
  const ckpt = await openAwqCheckpoint(dir);
  try {
    // A model with a hole, or an integer where weights belong, fails here, not at the first
    // forward that needs it.
    const unused = new Set(ckpt.checkComplete().unused);
    const linearNames = ckpt.linearNames();
    const owned = new Set<string>();
    for (const name of linearNames) for (const part of ['qweight', 'qzeros', 'scales', 'bias']) owned.add(`${name}.${part}`);
    const plain = ckpt.folder.tensorNames().filter((t) => !owned.has(t));
    const total = linearNames.length + plain.length;
    let done = 0;
    const progress = new ProgressTracker(options.onProgress && ((e) => options.onProgress!(e as LoadProgressEvent)));
    progress.beginUnits();
    const loaded = (name: string) => {
      done++;
      progress.emit({ stage: 'load', completed: done, total, message: name, name, done } as Omit<LoadProgressEvent, 'elapsedMs' | 'etaMs'>);
    };
    const linears = new Map<string, Int4Linear>();
    const dispose = async () => {
      await Promise.all([...linears.values()].map((l) => l.dispose()));
    };
    try {
      for (const name of linearNames) {
        throwIfAborted(options.signal);
        // One linear at a time: the AWQ tensors are read, repacked, and dropped (or kept as the layer's `awq`).
        linears.set(name, await Int4Linear.fromAwq(await ckpt.readLinear(name), { device, keepAwq }));
        loaded(name);
      }
      const tensors = new Map<string, Float32Array | HalfArray>();
      const tensorInfo = new Map<string, { shape: readonly number[]; dtype: Dtype }>();
      for (const name of plain) {
        throwIfAborted(options.signal);
        const info = ckpt.folder.info(name);
        if (!widen && (info.dtype === 'F16' || info.dtype === 'BF16')) {
          tensors.set(name, await ckpt.folder.readStored(name));
        } else {
          // What the architecture reads is floating point (checked above, and by ckpt.readF32); a
          // tensor it does not read is handed over widened to fp32 whatever its dtype.
          tensors.set(name, await (unused.has(name) ? ckpt.folder.weights.fileOf(name).readF32(name) : ckpt.readF32(name)));
        }
        tensorInfo.set(name, { shape: info.shape, dtype: info.dtype });
        loaded(name);
      }
      return { dir, config: ckpt.config, quantization: ckpt.quantization, linears, tensors, tensorInfo, dispose };
    } catch (err) {
      // A load that fails part way (out of device memory at some layer, a corrupt tensor) gives
      // back what it had uploaded rather than leaving it to the garbage collector.
      await dispose();
      throw err;
    }
  } finally {
    await ckpt.close();
  }
}
