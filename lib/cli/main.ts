#!/usr/bin/env node
/** The `awq` command line. Each subcommand lives in its own file and registers itself here. */
import { Command, CommanderError } from 'commander';

import { AwqError } from '../errors.js';
import { version } from '../version.js';
import { registerBench } from './bench.js';
import { registerDoctor } from './doctor.js';
import { registerEval } from './eval.js';
import { registerQuantize } from './quantize.js';
import { registerInspect } from './inspect.js';
import { receivedSignal, signalExitCode } from './progress-view.js';

const program = new Command();
program
  .name('awq')
  .description('Activation-aware weight quantization (AWQ): quantize, evaluate and benchmark 4-bit models')
  .version(version, '-v, --version')
  .showHelpAfterError()
  .exitOverride();

registerDoctor(program);
registerQuantize(program);
registerEval(program);
registerInspect(program);
registerBench(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode;
  } else if (err instanceof AwqError) {
    process.stderr.write(`awq: ${err.message} (${err.code})\n`);
    process.exitCode = err.code === 'ERR_AWQ_ABORTED' ? signalExitCode(receivedSignal ?? 'SIGINT') : 1;
  } else {
    process.stderr.write(`awq: unexpected error: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = 1;
  }
}
