/**
 * Renders progress events: a bar on a terminal (cli-progress), one plain line per step when
 * stderr is not a TTY, or JSON lines (`--json`) for harnesses. Progress goes to stderr so that
 * stdout carries only results.
 */
import { constants } from 'node:os';

import cliProgress from 'cli-progress';

import type { ProgressEvent } from '../progress.js';

function seconds(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms)) return '?';
  const s = Math.round(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

function label(e: ProgressEvent, unit: string): string {
  if (e.stage === 'layer' && e.layer !== undefined) return `${unit} ${e.layer + 1}/${e.total} ${e.phase ?? ''}`.trim();
  if (e.stage === 'eval' && e.layer !== undefined) return `windows ${e.completed}/${e.total}, layer ${e.layer + 1}`;
  if (e.message) return e.message;
  return e.stage;
}

export interface ProgressView {
  listener: (e: ProgressEvent) => void;
  stop(): void;
}

export function progressView(mode: { json: boolean; quiet?: boolean }, unit = 'layer'): ProgressView {
  if (mode.quiet) return { listener: () => {}, stop: () => {} };
  if (mode.json) {
    return {
      listener: (e) =>
        e.stage === 'notice'
          ? notice(mode, e.message ?? '', { elapsedMs: e.elapsedMs })
          : process.stderr.write(`${JSON.stringify({ event: 'progress', ...e })}\n`),
      stop: () => {},
    };
  }
  if (!process.stderr.isTTY) {
    let last = '';
    return {
      listener: (e) => {
        if (e.stage === 'notice') return notice(mode, e.message ?? '');
        const line = `[${seconds(e.elapsedMs)}] ${label(e, unit)} (${e.completed}/${e.total}, eta ${seconds(e.etaMs)})`;
        const key = `${e.stage}:${e.layer}:${e.phase}:${e.message}:${e.completed}`;
        if (key !== last) process.stderr.write(`${line}\n`);
        last = key;
      },
      stop: () => {},
    };
  }
  const bar = new cliProgress.SingleBar(
    {
      format: ' {bar} {value}/{total} {label} | elapsed {elapsed} | eta {etaText}',
      hideCursor: true,
      stream: process.stderr,
      clearOnComplete: false,
      // a notice clears the bar's line (below): redraw it at the next tick even if unchanged
      forceRedraw: true,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    listener: (e) => {
      if (e.stage === 'notice') {
        // A line of its own above the bar (as a label it would last one redraw). The bar turns
        // line wrapping off while it runs (a long notice would be cut at the screen's edge: on
        // for the notice), and restores the cursor it saved at its start when it stops: save it
        // again below the notice.
        if (started) process.stderr.write(`\r\x1b[2K\x1b[?7hawq: ${e.message ?? ''}\n\x1b[?7l\x1b7`);
        else notice(mode, e.message ?? '');
        return;
      }
      const payload = { label: label(e, unit), elapsed: seconds(e.elapsedMs), etaText: seconds(e.etaMs) };
      if (!started) {
        bar.start(e.total, e.completed, payload);
        started = true;
      } else {
        bar.setTotal(e.total);
        bar.update(e.completed, payload);
      }
    },
    stop: () => {
      if (started) bar.stop();
    },
  };
}

/** The exit status of a process ended by `sig` (the shell's 128 + signal number: 130, 143). */
export function signalExitCode(sig: NodeJS.Signals): number {
  return 128 + (constants.signals[sig] ?? 2);
}

/** The signal that aborted this run, if one did (main.ts turns it into the exit status). */
export let receivedSignal: NodeJS.Signals | undefined;

/**
 * A note for the user on stderr: `awq: message`, or with `--json` a `{"event":"notice", ...}`
 * line in the progress stream (with `fields`).
 */
export function notice(mode: { json?: boolean }, message: string, fields: Record<string, unknown> = {}): void {
  process.stderr.write(mode.json ? `${JSON.stringify({ event: 'notice', ...fields, message })}\n` : `awq: ${message}\n`);
}

/**
 * Ctrl-C, `kill`, and the terminal going away (a closed window, a dropped ssh session): each would
 * otherwise end the process with no clean-up, leaving a model-sized temporary folder behind.
 */
const STOP_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/**
 * Aborts `controller` on the first Ctrl-C / SIGTERM / SIGHUP. A second one exits at once; unfinished output
 * folders are removed on the way out (output-dir.ts). With `json`, the note about it is a
 * `{"event":"signal", ...}` line in the progress stream.
 */
export function abortOnSignals(controller: AbortController, mode: { json?: boolean } = {}): () => void {
  const onSignal = (sig: NodeJS.Signals) => {
    if (controller.signal.aborted) {
      // the progress bar hides the cursor and turns line wrapping off: give both back
      if (process.stderr.isTTY) process.stderr.write('\x1b[?25h\x1b[?7h');
      process.exit(signalExitCode(sig));
    }
    receivedSignal = sig;
    const message = `${sig} received, stopping cleanly (press again to exit at once)`;
    // On a terminal the running bar restores its saved cursor when it stops: save it again below
    // this line, or the next line written would overwrite it.
    process.stderr.write(
      mode.json ? `${JSON.stringify({ event: 'signal', signal: sig, message })}\n` : `\nawq: ${message}\n${process.stderr.isTTY ? '\x1b7' : ''}`,
    );
    controller.abort();
  };
  for (const sig of STOP_SIGNALS) process.on(sig, onSignal);
  return () => {
    // Once a signal has aborted the run, the handlers stay until the process exits: a second
    // signal arriving after the run unwound (while the process winds down) must still exit with
    // 128 + signal, not fall to the default action. (Signal handlers do not keep Node alive.)
    if (controller.signal.aborted) return;
    for (const sig of STOP_SIGNALS) process.off(sig, onSignal);
  };
}
