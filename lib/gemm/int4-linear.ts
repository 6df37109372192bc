/** `Int4Linear`: a 4-bit linear layer on the AWQ packed weights (the class's comment says how). */
import type { AwqLinearTensors } from '../checkpoint/awq-format.js';
import { backends, noCudaError } from '../backends.js';
import { InvalidArgumentError, NonFiniteError } from '../errors.js';
import { checkDevice, describeValue, optionalBoolean, optionsObject, overlaps, requiredObject } from '../validate.js';
import { firstNonFiniteHalf, halfFormat, isHalfArray, type HalfArray } from '../half.js';
import { native, type CudaInt4Handle, type Int4Handle } from '../native.js';

/** This project's quantizer output for one linear: `w ≈ (q - zeros) * scales` per group. */
export interface QuantizedLinearTensors {
  /** [out, in], values 0..15. */
  q: Uint8Array;
  /** [out, in/group], values 0..15. */
  zeros: Uint8Array;
  /** [out, in/group]. */
  scales: Float32Array;
  outFeatures: number;
  inFeatures: number;
  groupSize: number;
  bias?: Float32Array;
  name?: string;
}

/** fp32 activations, or 16-bit ones flagged with their format ('fp16' as `precision` spells it, or 'f16'). */
export type Int4Input = Float32Array | HalfArray;

export type Int4Mode = 'exact' | 'int8';

/** Where the layer's weights live and its products run. */
export type Int4Device = 'cpu' | 'cuda';

export interface Int4BuildOptions {
  /** 'cpu' (default) or 'cuda' (device 0 of a CUDA build: CudaError otherwise). */
  device?: Int4Device;
  /**
   * fromAwq: keep the AWQ tensors as `layer.awq`, for writing them out again (default true). Off,
   * the layer holds only its repacked weights, about half the memory when nothing else holds them.
   */
  keepAwq?: boolean;
}

export interface Int4ForwardOptions {
  /** 'exact' (default) or 'int8' (activations quantized per 128 inputs; see the class docs). */
  mode?: Int4Mode;
  /** Where to write y ([m, out]); a new array when absent. */
  out?: Float32Array;
}

/**
 * A 4-bit linear layer (AWQ packed weights) that multiplies fp32, fp16 or bf16 activations on the
 * CPU, or on CUDA with `device: 'cuda'`: `y[m, out] = x[m, in] * dequantize(W)^T + bias`.
 *
 * Memory: the weights are repacked once, at construction, into the layout the kernels stream
 * (native/core/int4_gemm.h): `in * out / 2` bytes of nibbles (rows padded to a multiple of 128
 * inputs) plus 2.5 bytes per group and row (fp16 scale, 4-bit zero) and 4 bytes per output of
 * bias, i.e. about 0.52 bytes per weight at group 128, the size of the AWQ tensors themselves
 * (`nativeBytes`). A layer built by `fromAwq` keeps the AWQ tensors referenced (not copied) in
 * `awq`, for saving. `dispose()` gives the weights back at once (the garbage collector does not
 * see native or device memory); a layer that is only dropped frees them when it is collected.
 * Exact calls with m > 16 pack x once (`ceil(m / 6) * 6 * in * 4` bytes) and use 128 KiB per
 * pool thread for dequantized weight panels (AVX2; elsewhere 256 KiB from m = 64, and for
 * 16 < m < 64 a scratch of `128 * in * 4` bytes per thread plus the sgemm's packing buffers).
 *
 * Device 'cuda' (`fromAwq(t, { device: 'cuda' })`, a CUDA build with a device): the weights are
 * repacked and uploaded to device 0 (about the same bytes, in device memory); each `forward`
 * rounds x to fp16 (the kernels are W4A16: fp16 activations, fp32 accumulation), copies it over
 * and y back. Only `exact` mode and the async `forward`; `dequantize` needs a CPU layer.
 *
 * Modes: `exact` (default) equals `x * dequantize(W)^T` up to fp32 summation rounding.
 * `int8` quantizes each row of x per 128 inputs to int8 (scale max|x|/127, round to nearest)
 * and multiplies in integers; each output is then off by at most
 * `sum over 128-blocks of (max|x_block| / 254) * sum |w| over the block` (plus fp32 rounding),
 * typically ~0.1-0.5% relative. It needs a group size that is a multiple of 128.
 */
export class Int4Linear {
  readonly name: string | undefined;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly groupSize: number;
  /** The AWQ tensors this layer was built from (for saving), or null (quantizer output, `keepAwq: false`). */
  readonly awq: AwqLinearTensors | null;
  readonly device: Int4Device;
  // Both null once disposed.
  #handle: Int4Handle | null;
  #cuda: CudaInt4Handle | null;

  private constructor(handle: Int4Handle | CudaInt4Handle, device: Int4Device, name: string | undefined, awq: AwqLinearTensors | null) {
    this.device = device;
    this.#handle = device === 'cpu' ? (handle as Int4Handle) : null;
    this.#cuda = device === 'cuda' ? (handle as CudaInt4Handle) : null;
    const info = this.#cuda ? native().int4CudaInfo(this.#cuda) : native().int4Info(this.#handle!);
    this.name = name;
    this.inFeatures = info.in;
    this.outFeatures = info.out;
    this.groupSize = info.group;
    this.awq = awq;
  }

  /** Builds the layer from AWQ checkpoint tensors (validated here, repacked off the JS thread). */
  static async fromAwq(t: AwqLinearTensors, buildOptions?: Int4BuildOptions): Promise<Int4Linear> {
    requiredObject(t, 'tensors');
    const options = optionsObject(buildOptions, 'options');
    const device = checkDevice(options.device);
    const keepAwq = optionalBoolean(options.keepAwq, 'keepAwq') ?? true;
    const what = t?.name ? `${t.name}: ` : '';
    const { inFeatures: inF, outFeatures: outF } = t;
    const group = checkShape(what, inF, outF, t.groupSize);
    if (outF % 8 !== 0) throw new InvalidArgumentError(`${what}outFeatures: expected a multiple of 8 (AWQ packs 8 outputs per int32), got ${outF}`);
    const groups = inF / group;
    checkArray(what, 'qweight', t.qweight, Int32Array, (inF * outF) / 8, `[${inF}, ${outF / 8}]`);
    checkArray(what, 'qzeros', t.qzeros, Int32Array, (groups * outF) / 8, `[${groups}, ${outF / 8}]`);
    checkArray(what, 'scales', t.scales, Uint16Array, groups * outF, `[${groups}, ${outF}]`);
    checkFp16Finite(what, 'scales', t.scales, outF);
    if (t.bias !== undefined) {
      checkArray(what, 'bias', t.bias, Uint16Array, outF, `[${outF}]`);
      checkFp16Finite(what, 'bias', t.bias, outF);
    }
    if (device === 'cuda') {
      if (inF % 32 !== 0 || group % 32 !== 0) {
        throw new InvalidArgumentError(`${what}device 'cuda' needs inFeatures and groupSize that are multiples of 32, got ${inF} and ${group}`);
      }
      // Also when a CUDA build exists but no device answered: the CPU binary was loaded then.
      if (!backends().cuda) throw noCudaError(`${what}device 'cuda'`);
      const cudaHandle = await namedBuild(t.name, () =>
        native().int4CudaUpload(t.qweight.slice(), t.qzeros.slice(), t.scales.slice(), t.bias?.slice() ?? null, inF, outF, group),
      );
      return new Int4Linear(cudaHandle, 'cuda', t.name, keepAwq ? t : null);
    }
    // Native threads read the tensors while JS runs on: private copies (see `forward`).
    const handle = await namedBuild(t.name, () =>
      native().int4PackAwq(t.qweight.slice(), t.qzeros.slice(), t.scales.slice(), t.bias?.slice() ?? null, inF, outF, group),
    );
    return new Int4Linear(handle, 'cpu', t.name, keepAwq ? t : null);
  }

  /**
   * Builds the layer from this project's quantizer output (q and zeros 0..15). The scales are held
   * as fp16, as the checkpoint stores them (the quantizer's scales are fp16 values already); any
   * other value rounds to the nearest fp16, and one beyond fp16's range is a `NonFiniteError`.
   */
  static async fromQuantized(t: QuantizedLinearTensors): Promise<Int4Linear> {
    if (t === null || typeof t !== 'object') throw new InvalidArgumentError(`tensors: expected an object, got ${String(t)}`);
    const what = t?.name ? `${t.name}: ` : '';
    const { inFeatures: inF, outFeatures: outF } = t;
    const group = checkShape(what, inF, outF, t.groupSize);
    const groups = inF / group;
    checkArray(what, 'q', t.q, Uint8Array, outF * inF, `[${outF}, ${inF}]`);
    checkArray(what, 'zeros', t.zeros, Uint8Array, outF * groups, `[${outF}, ${groups}]`);
    checkArray(what, 'scales', t.scales, Float32Array, outF * groups, `[${outF}, ${groups}]`);
    checkF32Finite(what, 'scales', t.scales, groups);
    if (t.bias !== undefined) {
      checkArray(what, 'bias', t.bias, Float32Array, outF, `[${outF}]`);
      checkF32Finite(what, 'bias', t.bias, outF);
    }
    const handle = await namedBuild(t.name, () =>
      native().int4PackQuantized(t.q.slice(), t.zeros.slice(), t.scales.slice(), t.bias?.slice() ?? null, inF, outF, group),
    );
    return new Int4Linear(handle, 'cpu', t.name, null);
  }

  /** Bytes of the repacked weights held natively (device memory for a CUDA layer); 0 once disposed. */
  get nativeBytes(): number {
    if (this.#disposed) return 0;
    return this.#cuda ? native().int4CudaInfo(this.#cuda).bytes : native().int4Info(this.#handle!).bytes;
  }

  /**
   * Releases the native weights now instead of at garbage collection: a CUDA layer frees its
   * device memory (after a forward in flight finishes), a CPU layer its repacked weights (after
   * the calls in flight, which hold their own reference). The garbage collector does not see device memory, so a serving backend that
   * reloads or swaps models should dispose the old layers. Later calls throw (or reject with)
   * InvalidArgumentError; disposing twice is harmless.
   */
  async dispose(): Promise<void> {
    const cuda = this.#cuda;
    const handle = this.#handle;
    this.#handle = null;
    this.#cuda = null;
    if (handle) native().int4Release(handle);
    if (cuda) await native().int4CudaRelease(cuda);
  }

  get #disposed(): boolean {
    return this.#handle === null && this.#cuda === null;
  }

  #checkLive(what: string): void {
    if (this.#disposed) throw new InvalidArgumentError(`${what}: ${this.name ?? 'this Int4Linear'} was disposed`);
  }

  /**
   * `y[m, out]` for `x[m, in]`, computed on the worker pool (does not block the event loop).
   * Native threads work on private copies of x and y: a caller may transfer or detach its
   * buffers while the call runs (a detached `out` then rejects the call, nothing is written).
   */
  forward(x: Int4Input, m: number, options: Int4ForwardOptions = {}): Promise<Float32Array> {
    try {
      this.#checkLive('forward');
      const a = this.#args(x, m, options);
      if (m === 0) return Promise.resolve(a.out); // an empty batch: a server's idle step
      const data = a.data.slice();
      const y = options.out ? new Float32Array(a.out.length) : a.out;
      const done = (this.#cuda
        ? native().int4CudaForward(this.#cuda, data, a.dtype, m, y)
        : native().int4Forward(this.#handle!, data, a.dtype, m, a.mode, y)
      ).catch((err: unknown) => {
        throw withLayerName(this.name, err);
      });
      return y === a.out ? done : done.then(() => copyInto(a.out, y));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Synchronous `forward` for small m (decode steps): no Promise overhead, blocks the caller. CPU layers only. */
  forwardSync(x: Int4Input, m: number, options: Int4ForwardOptions = {}): Float32Array {
    this.#checkLive('forwardSync');
    if (!this.#handle) throw new InvalidArgumentError(`forwardSync: a CUDA layer runs through forward() (asynchronous)`);
    const a = this.#args(x, m, options);
    if (m === 0) return a.out;
    // The kernels write y while they still read x: an out over x's memory (one buffer reused in
    // place for a square layer) gets a copy of x. forward() always copies x.
    const data = overlaps(a.data, a.out) ? a.data.slice() : a.data;
    try {
      return native().int4ForwardSync(this.#handle, data, a.dtype, m, a.mode, a.out);
    } catch (err) {
      throw withLayerName(this.name, err);
    }
  }

  /** `dequantize(W)` as fp32 `[out, in]`: `(q - z) * s` exactly (tests, dense baselines). CPU layers only. */
  dequantize(): Float32Array {
    this.#checkLive('dequantize');
    if (!this.#handle) throw new InvalidArgumentError(`dequantize: needs a CPU layer (build one from the same tensors with device 'cpu')`);
    return native().int4Dequantize(this.#handle, new Float32Array(this.outFeatures * this.inFeatures));
  }

  #args(x: Int4Input, m: number, options: Int4ForwardOptions) {
    // Errors name the layer: a serving loop calls hundreds of them.
    const what = this.name ? `${this.name}: ` : '';
    if (options === null || typeof options !== 'object') {
      throw new InvalidArgumentError(`${what}options: expected an object or undefined, got ${describeValue(options)}`);
    }
    if (!Number.isInteger(m) || m < 0) throw new InvalidArgumentError(`${what}m: expected an integer >= 0, got ${String(m)}`);
    const n = m * this.inFeatures;
    let data: Float32Array | Uint16Array;
    let dtype: 0 | 1 | 2;
    if (x instanceof Float32Array) {
      data = x;
      dtype = 0;
    } else if (isHalfArray(x)) {
      dtype = halfFormat(x, `${what}x`) === 'bf16' ? 2 : 1;
      data = x.data;
    } else {
      throw new InvalidArgumentError(`${what}x: expected a Float32Array or { data: Uint16Array, dtype: 'fp16' | 'bf16' }, got ${describeValue(x)}`);
    }
    if (data.length !== n) {
      throw new InvalidArgumentError(`${what}x: expected m * inFeatures = ${m} * ${this.inFeatures} = ${n} elements, got ${data.length}`);
    }
    const mode = options.mode ?? 'exact';
    if (mode !== 'exact' && mode !== 'int8') throw new InvalidArgumentError(`${what}mode: expected 'exact' or 'int8', got ${String(mode)}`);
    if (mode === 'int8' && this.#cuda) throw new InvalidArgumentError(`${what}mode 'int8' is a CPU mode; a CUDA layer multiplies fp16 activations`);
    if (mode === 'int8' && this.groupSize % 128 !== 0) {
      throw new InvalidArgumentError(`${what}mode 'int8' needs a group size that is a multiple of 128, this layer has ${this.groupSize}`);
    }
    const outLen = m * this.outFeatures;
    const out = options.out ?? new Float32Array(outLen);
    if (!(out instanceof Float32Array) || out.length !== outLen) {
      throw new InvalidArgumentError(`${what}out: expected a Float32Array of m * outFeatures = ${outLen} elements, got ${describeValue(out)}${out instanceof Float32Array ? ` of ${out.length}` : ''}`);
    }
    return { data, dtype, mode: mode === 'int8' ? (1 as const) : (0 as const), out };
  }
}

/** Copies a finished result into the caller's `out`, unless its buffer was detached meanwhile. */
function copyInto(out: Float32Array, y: Float32Array): Float32Array {
  if (out.length !== y.length) {
    throw new InvalidArgumentError(`out: its buffer was detached or transferred while forward ran; the result was not written`);
  }
  out.set(y);
  return out;
}

/**
 * A native error (a value of x the kernels refuse, out of device memory) with the layer's name in
 * front, as the argument checks name it: a serving loop or a model load calls hundreds of layers.
 */
function withLayerName(name: string | undefined, err: unknown): unknown {
  if (name && err instanceof Error && !err.message.startsWith(`${name}: `)) err.message = `${name}: ${err.message}`;
  return err;
}

/** A native build of a layer (repacking, or the CUDA upload): out of (device) memory while loading a model names where it stopped. */
async function namedBuild<H>(name: string | undefined, build: () => Promise<H>): Promise<H> {
  try {
    return await build();
  } catch (err) {
    throw withLayerName(name, err);
  }
}

function checkShape(what: string, inF: number, outF: number, groupSize: number): number {
  for (const [name, v] of [['inFeatures', inF], ['outFeatures', outF]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new InvalidArgumentError(`${what}${name}: expected a positive integer, got ${String(v)}`);
  }
  if (!Number.isInteger(groupSize) || (groupSize < 1 && groupSize !== -1)) {
    throw new InvalidArgumentError(`${what}groupSize: expected a positive integer or -1, got ${String(groupSize)}`);
  }
  const group = groupSize === -1 ? inF : groupSize;
  if (inF % group !== 0) {
    throw new InvalidArgumentError(`${what}inFeatures (${inF}) must be a multiple of groupSize (${group})`);
  }
  if (group % 16 !== 0) {
    throw new InvalidArgumentError(`${what}groupSize: the int4 kernels need a multiple of 16, got ${group}`);
  }
  return group;
}

type TypedCtor = Int32ArrayConstructor | Uint16ArrayConstructor | Uint8ArrayConstructor | Float32ArrayConstructor;

function checkArray(what: string, name: string, v: unknown, ctor: TypedCtor, length: number, shape: string): void {
  if (!(v instanceof ctor)) throw new InvalidArgumentError(`${what}${name}: expected a ${ctor.name} ${shape}, got ${describeValue(v)}`);
  if ((v as { length: number }).length !== length) {
    throw new InvalidArgumentError(`${what}${name}: expected ${shape} = ${length} elements, got ${(v as { length: number }).length}`);
  }
}

function checkFp16Finite(what: string, name: string, a: Uint16Array, cols: number): void {
  const i = firstNonFiniteHalf(a, 'fp16');
  if (i >= 0) throw new NonFiniteError(`${what}${name}[${Math.floor(i / cols)}, ${i % cols}] is ${a[i] & 0x03ff ? 'NaN' : 'Inf'}`);
}

function checkF32Finite(what: string, name: string, a: Float32Array, cols: number): void {
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) {
      throw new NonFiniteError(`${what}${name}[${Math.floor(i / cols)}, ${i % cols}] is ${Number.isNaN(a[i]) ? 'NaN' : 'Inf'}`);
    }
  }
}

