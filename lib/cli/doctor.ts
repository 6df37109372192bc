/** `awq doctor`: what this machine and build can run. */
import type { Command } from 'commander';

import { backends } from '../backends.js';
import { version } from '../version.js';

function bf16Line(cpu: { isa: string; bf16Products: boolean }): string {
  if (!cpu.bf16Products) return 'no bf16 instructions here (AVX512-BF16, arm64 BF16): run on the fp32 kernels (bf16 results at fp32 speed)';
  if (cpu.isa === 'neon') return 'BFDOT (arm64 BF16), half the instructions of fp32; --precision auto stays fp32 here';
  return 'AVX512-BF16, about 2x the fp32 rate';
}

export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description('print the native backends: CPU instruction set, threads, CUDA devices (or why none)')
    .option('--json', 'print a JSON object')
    .action((opts: { json?: boolean }) => {
      const b = backends();
      if (opts.json) {
        process.stdout.write(`${JSON.stringify({ version, node: process.version, ...b }, null, 2)}\n`);
        return;
      }
      const lines = [
        `awq ${version} (Node.js ${process.version}, ${process.platform}-${process.arch})`,
        `native binary: ${b.binary}`,
        `cpu: ${b.cpu.isa} kernels, ${b.cpu.threads} threads (${b.cpu.cores} cores available)`,
        `cpu features: ${b.cpu.features.join(' ') || (process.arch === 'x64' ? 'none beyond x86-64 baseline' : `${process.arch}: no SIMD kernels for it, the portable ones run`)}`,
        `cpu bf16 products (--precision bf16): ${bf16Line(b.cpu)}`,
      ];
      if (b.cuda) {
        for (const d of b.cuda.devices) {
          lines.push(
            `cuda: device ${d.index}: ${d.name}, compute capability ${d.computeCapability}, ` +
              `${(d.memoryBytes / 2 ** 30).toFixed(1)} GiB`,
          );
        }
      } else {
        lines.push(`cuda: none (${b.cudaUnavailable})`);
      }
      process.stdout.write(`${lines.join('\n')}\n`);
    });
}
