/**
 * Calibration hidden states held in CUDA device memory between decoder layers. The pipeline
 * uploads the embedded calibration tokens once; `quantizeDecoderLayer` with backend 'cuda' then
 * reads each layer's input from here and leaves the layer's output here, so the activations
 * (1 GiB for a 7B model on 128 blocks of 512 tokens) do not cross PCIe twice per layer.
 */
import { InvalidArgumentError } from '../errors.js';
import { native, type CudaHiddenHandle } from '../native.js';

export class CudaHiddenStates {
  readonly #handle: CudaHiddenHandle;
  #release: Promise<void> | undefined;
  /** Rows (calibration tokens). */
  readonly tokens: number;
  readonly hiddenSize: number;

  private constructor(handle: CudaHiddenHandle, tokens: number, hiddenSize: number) {
    this.#handle = handle;
    this.tokens = tokens;
    this.hiddenSize = hiddenSize;
  }

  /**
   * Copies `hidden` [tokens, hiddenSize] to device 0 on a worker (CudaError without a CUDA build
   * or device). Keep `hidden` attached until the promise settles.
   */
  static async upload(hidden: Float32Array, hiddenSize: number): Promise<CudaHiddenStates> {
    if (!(hidden instanceof Float32Array)) throw new InvalidArgumentError('hidden: expected a Float32Array');
    if (!Number.isInteger(hiddenSize) || hiddenSize < 1) {
      throw new InvalidArgumentError(`hiddenSize: expected a positive integer, got ${hiddenSize}`);
    }
    if (hidden.length === 0 || hidden.length % hiddenSize !== 0) {
      throw new InvalidArgumentError(`hidden: expected a positive multiple of hiddenSize = ${hiddenSize} elements, got ${hidden.length}`);
    }
    const handle = await native().cudaHiddenUpload(hidden, hiddenSize);
    return new CudaHiddenStates(handle, hidden.length / hiddenSize, hiddenSize);
  }

  /** True once release() ran: the device memory is gone and the states cannot be used. */
  get released(): boolean {
    return native().cudaHiddenInfo(this.#handle).released;
  }

  /** The current contents, copied to the host ([tokens, hiddenSize]) on a worker. */
  download(): Promise<Float32Array> {
    try {
      return native().cudaHiddenDownload(this.#handle);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Gives the device memory back now (the garbage collector would, later). Idempotent. */
  release(): Promise<void> {
    if (!this.#release) {
      try {
        // Shared by concurrent calls; forgotten when refused (in use by a layer call), so a later
        // release can succeed.
        this.#release = native().cudaHiddenRelease(this.#handle).catch((err: unknown) => {
          this.#release = undefined;
          throw err;
        });
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return this.#release;
  }

  /** @internal The native handle, for quantizeDecoderLayer. */
  nativeHandle(): CudaHiddenHandle {
    return this.#handle;
  }
}
