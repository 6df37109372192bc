/** What the tests that spawn the CLI collect from it. */
import type { ChildProcess } from 'node:child_process';

export interface Outcome {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Collects a spawned process's stdout and stderr (those that are pipes and not destroyed) until it
 * closes. `onStderr` sees the whole stderr so far after each chunk: to signal the process at a point.
 */
export function collectOutput(child: ChildProcess, onStderr?: (stderr: string) => void): Promise<Outcome> {
  const r: Outcome = { status: null, signal: null, stdout: '', stderr: '' };
  // as text: a multi-byte character split between two chunks stays whole
  if (child.stdout && !child.stdout.destroyed) child.stdout.setEncoding('utf8').on('data', (d: string) => (r.stdout += d));
  if (child.stderr && !child.stderr.destroyed) {
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      r.stderr += d;
      onStderr?.(r.stderr);
    });
  }
  return new Promise((res, rej) => {
    child.on('error', rej);
    child.on('close', (status, signal) => res({ ...r, status, signal }));
  });
}
