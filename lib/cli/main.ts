#!/usr/bin/env node
/** The `awq` command line. Each subcommand lives in its own file and registers itself here. */
import { Command, CommanderError } from 'commander';

import { AwqError, ioError } from '../errors.js';
import { version } from '../version.js';
import { registerBench } from './bench.js';
import { registerDoctor } from './doctor.js';
import { registerEval } from './eval.js';
import { registerQuantize } from './quantize.js';
import { registerInspect } from './inspect.js';
import { receivedSignal, signalExitCode } from './progress-view.js';

/**
 * Exit statuses, the same for every command (README "Exit codes and --json errors"); a signal
 * that stopped the run exits with 128 + its number (130, 143).
 */
const EXIT_FAILURE = 1; // an AwqError: bad input, a damaged checkpoint, I/O, CUDA, ... (its code says which)
const EXIT_USAGE = 2; // commander refused the command line: unknown command or option, bad or missing value
const EXIT_SOFTWARE = 70; // EX_SOFTWARE: an error that is not an AwqError (a bug)
const EXIT_PIPE = 141; // 128 + SIGPIPE: the reader of stdout went away

/** `--json` anywhere before `--`: errors too are JSON lines on stderr, in the progress stream. */
const cliArgs = process.argv.slice(2);
const json = (cliArgs.includes('--') ? cliArgs.slice(0, cliArgs.indexOf('--')) : cliArgs).includes('--json');

/**
 * Writes the error report (one `awq: ...` line, or one `{"event":"error", ...}` JSON line with
 * --json) and returns the exit status. Commander has already printed its own usage errors (and
 * the help) in the plain form.
 */
function reportError(err: unknown): number {
  let line: Record<string, unknown>;
  let plain: string | null;
  let status: number;
  if (err instanceof CommanderError) {
    if (err.exitCode === 0) return 0; // --help, --version
    status = EXIT_USAGE;
    // `awq help frob` shows the program's help, as `awq` alone does: say which name was unknown.
    const unknownHelp = err.code === 'commander.help' && cliArgs[0] === 'help' && cliArgs[1] !== undefined && !cliArgs[1].startsWith('-');
    const message = unknownHelp
      ? `unknown command '${cliArgs[1]}' (--help lists them)`
      : err.code === 'commander.help' ? 'no command given (--help lists them)' : err.message.replace(/^error: /, '');
    line = { code: 'ERR_AWQ_USAGE', name: 'UsageError', message };
    plain = unknownHelp ? `error: ${message}` : null;
  } else if (err instanceof AwqError) {
    status = err.code === 'ERR_AWQ_ABORTED' ? signalExitCode(receivedSignal ?? 'SIGINT') : EXIT_FAILURE;
    line = { code: err.code, name: err.name, message: err.message };
    plain = `awq: ${err.message} (${err.code})`;
  } else {
    status = EXIT_SOFTWARE;
    const e = err as Error | undefined;
    line = { code: 'ERR_AWQ_INTERNAL', name: e?.name ?? typeof err, message: e?.message ?? String(err), stack: e?.stack };
    plain = `awq: unexpected error: ${e?.stack ?? String(err)}`;
  }
  if (json) process.stderr.write(`${JSON.stringify({ event: 'error', ...line, exitCode: status })}\n`);
  else if (plain !== null) process.stderr.write(`${plain}\n`);
  return status;
}

// A reader of stdout that went away (`awq ... | head`) ends the run quietly, as SIGPIPE would;
// a full disk or an I/O error behind stdout is an ERR_AWQ_IO error. Progress and log lines on
// stderr are best effort: a failed write there is dropped and the run goes on.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(EXIT_PIPE);
  process.exit(reportError(ioError('writing to stdout', err)));
});
process.stderr.on('error', () => {});

const program = new Command();
program
  .name('awq')
  .description('Activation-aware weight quantization (AWQ): quantize, evaluate and benchmark 4-bit models')
  .version(version, '-v, --version')
  .showHelpAfterError()
  // With --json the usage error becomes one JSON line (reportError), without commander's text.
  .configureOutput({ writeErr: (s) => void (json || process.stderr.write(s)) })
  .exitOverride();

registerDoctor(program);
registerQuantize(program);
registerEval(program);
registerInspect(program);
registerBench(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  process.exitCode = reportError(err);
}
