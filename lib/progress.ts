/** Progress events shared by long-running API calls (quantize, evaluate) and the CLI renderers. */
import { AbortedError, InvalidArgumentError } from './errors.js';
import type { LayerPhase } from './quantize/layer.js';
import { describeArgument } from './validate.js';

export interface ProgressEvent {
  /**
   * What is running: loading, calibration, a decoder layer, writing, evaluation windows; or
   * 'notice': something the user should know, in `message` (a fallback taken, a folder an earlier
   * run left, source tensors not written), with the counts of the event before it.
   */
  stage: 'load' | 'calibrate' | 'layer' | 'write' | 'eval' | 'done' | 'notice';
  /** Units done and in all (layers for quantize, windows for eval). */
  completed: number;
  total: number;
  /** 0-based index of the layer being worked on, with its phase. */
  layer?: number;
  /** A layer's native phases (LayerPhase) and the pipeline's steps around them. */
  phase?: LayerPhase | 'load' | 'write' | 'done' | 'resumed';
  elapsedMs: number;
  /** Estimated remaining time from the average unit time so far. */
  etaMs?: number;
  message?: string;
}

/**
 * Called synchronously with each event. An exception it throws fails the call that emitted the
 * event with that exception (native work in progress stops, as on an abort); quantize leaves no
 * output folder then (see QuantizeOptions.onProgress).
 */
export type ProgressListener = (event: ProgressEvent) => void;

/** Emits events with elapsed time and an ETA computed from completed units. */
export class ProgressTracker {
  private readonly start = performance.now();
  private unitsStart = 0;
  private unitsStartAt = 0;
  /** Counts of the last event, repeated by notices. */
  private last = { completed: 0, total: 1 };
  constructor(private readonly listener: ProgressListener | undefined) {}

  /**
   * Marks the start of the unit-counted part, so loading time (and units done before, such as
   * layers kept by an earlier run) does not skew the ETA.
   */
  beginUnits(completed = 0): void {
    this.unitsStartAt = performance.now();
    this.unitsStart = completed;
  }

  emit(e: Omit<ProgressEvent, 'elapsedMs' | 'etaMs'>): void {
    if (!this.listener) return;
    if (e.stage !== 'notice') this.last = { completed: e.completed, total: e.total };
    const now = performance.now();
    const done = e.completed - this.unitsStart;
    const etaMs =
      this.unitsStartAt > 0 && done > 0 && e.total > e.completed
        ? ((now - this.unitsStartAt) / done) * (e.total - e.completed)
        : undefined;
    this.listener({ ...e, elapsedMs: now - this.start, etaMs });
  }

  /** A 'notice' event: a message for the user rather than a step (see ProgressEvent.stage). */
  notice(message: string): void {
    this.emit({ stage: 'notice', ...this.last, message });
  }
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new AbortedError('aborted by the caller');
}

/**
 * The `signal` and `onProgress` options of a long call: each absent, or an AbortSignal and a
 * function. A dotted `listenerName` (`control.onPhase`) prefixes the signal's name too.
 */
export function checkControl(signal: unknown, listener: unknown, listenerName = 'onProgress'): void {
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new InvalidArgumentError(`${listenerName.replace(/[^.]*$/, '')}signal: expected an AbortSignal, got ${describeArgument(signal)}`);
  }
  if (listener !== undefined && typeof listener !== 'function') {
    throw new InvalidArgumentError(`${listenerName}: expected a function, got ${describeArgument(listener)}`);
  }
}

