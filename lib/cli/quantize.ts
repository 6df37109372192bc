/** `awq quantize <hf-model-dir> --out <dir>`: the block-wise AWQ pipeline from the command line. */
import { readFile } from 'node:fs/promises';

import type { Command } from 'commander';
import { Option } from 'commander';

import type { CalibrationSource } from '../calib/dataset.js';
import { BadCheckpointError, BadConfigError, InvalidArgumentError, ioError } from '../errors.js';
import type { Precision } from '../quantize/layer.js';
import { quantize, type QuantizationReport } from '../quantize/pipeline.js';
import { keptProgress } from '../quantize/resume.js';
import { abortOnSignals, notice, progressView } from './progress-view.js';
import { MAX_THREADS } from '../backends.js';
import { intIn, pathValue, positiveDecimal } from './parse.js';

interface Opts {
  out: string;
  calib?: string;
  calibTokens?: string;
  textColumn: string;
  samples: number;
  seqlen: number;
  wBit: number;
  groupSize: number;
  zeroPoint: boolean;
  duoScaling: boolean;
  clip: boolean;
  method: 'awq' | 'rtn';
  threads?: number;
  backend: 'cpu' | 'cuda' | 'auto';
  precision: Precision | 'auto';
  overwrite?: boolean;
  keepDtype?: boolean;
  resume?: boolean;
  json?: boolean;
  quiet?: boolean;
}

async function calibrationSource(opts: Opts): Promise<CalibrationSource | undefined> {
  if (opts.calib && opts.calibTokens) throw new InvalidArgumentError('give --calib or --calib-tokens, not both');
  if (opts.calibTokens) {
    let samples: unknown;
    try {
      samples = JSON.parse(await readFile(opts.calibTokens, 'utf8'));
    } catch (err) {
      if (err instanceof SyntaxError) throw new InvalidArgumentError(`${opts.calibTokens}: not JSON (${err.message})`);
      throw ioError(`cannot read ${opts.calibTokens}`, err);
    }
    if (!Array.isArray(samples)) throw new InvalidArgumentError(`${opts.calibTokens}: expected a JSON array of arrays of token ids`);
    // The ids themselves are checked by the pipeline, against the model's vocabulary, naming this file.
    return { kind: 'tokens', samples: samples as number[][], path: opts.calibTokens };
  }
  if (!opts.calib) return undefined;
  // .json too: what Hugging Face `datasets` writes with to_json (JSON lines by default)
  if (/\.jsonl?(\.gz|\.zst)?$/i.test(opts.calib)) return { kind: 'jsonl', path: opts.calib, textColumn: opts.textColumn };
  if (/\.parquet$/i.test(opts.calib)) return { kind: 'parquet', path: opts.calib, textColumn: opts.textColumn };
  return { kind: 'text', path: opts.calib };
}

/** Options of the calibration and the search, which round-to-nearest does not read. */
const RTN_IGNORES: Array<[keyof Opts, string]> = [
  ['calib', '--calib'],
  ['calibTokens', '--calib-tokens'],
  ['textColumn', '--text-column'],
  ['samples', '--samples'],
  ['seqlen', '--seqlen'],
  ['duoScaling', '--duo-scaling / --no-duo-scaling'],
  ['clip', '--clip / --no-clip'],
];

export function registerQuantize(program: Command): void {
  program
    .command('quantize')
    .description('quantize a Hugging Face Llama / Mistral / Qwen2 / Qwen3 model to an AWQ checkpoint (AutoAWQ GEMM format)')
    .argument('<model>', 'Hugging Face model folder')
    .requiredOption('--out <dir>', 'output folder (written atomically)', pathValue('--out'))
    .addOption(
      new Option(
        '--calib <file>',
        'calibration texts: .jsonl or .json (one JSON object per line), .parquet (a string column), or plain text (one sample per paragraph); .jsonl and text may be .gz or .zst',
      )
        .argParser(pathValue('--calib'))
        .conflicts('calibTokens'),
    )
    .option('--calib-tokens <file>', 'pre-tokenized calibration samples: a JSON array of arrays of token ids', pathValue('--calib-tokens'))
    .option('--text-column <name>', 'JSONL field or Parquet column holding the text', 'text')
    .option('--samples <n>', 'calibration samples to accept', positiveDecimal('--samples'), 128)
    .option('--seqlen <n>', 'tokens per calibration block (longer samples are skipped)', positiveDecimal('--seqlen'), 512)
    .option('--w-bit <n>', 'weight bits (2, 3 or 4; stored in the 4-bit GEMM layout)', intIn('--w-bit', [2, 3, 4]), 4)
    .option(
      '--group-size <n>',
      "quantization group size: 32, 64, 128, or -1 for one group per row (vLLM reads -1 through its awq_marlin kernel only, not the plain awq one)",
      intIn('--group-size', [32, 64, 128, -1]),
      128,
    )
    .option('--zero-point', 'asymmetric quantization with zero points', true)
    .option('--no-zero-point', 'symmetric quantization')
    .option('--duo-scaling', 'scale from activation and weight statistics', true)
    .option('--no-duo-scaling', 'scale from activation statistics only')
    .option('--clip', 'search a clipping range per group', true)
    .option('--no-clip', 'skip the clip search')
    .addOption(new Option('--method <m>', 'awq, or rtn (round to nearest: the baseline)').choices(['awq', 'rtn']).default('awq'))
    .option('--threads <n>', 'native threads (default: all cores)', positiveDecimal('--threads', MAX_THREADS))
    .addOption(new Option('--backend <b>', 'compute backend (auto: CUDA when a CUDA build sees a device)').choices(['cpu', 'cuda', 'auto']).default('auto'))
    .addOption(
      new Option(
        '--precision <p>',
        "arithmetic of the search's linear products (auto: bf16 on a CPU with AVX512-BF16, about 1.75x faster, else fp32; fp16: CUDA only). Reduced precision may move close choices",
      )
        .choices(['auto', 'fp32', 'bf16', 'fp16'])
        .default('auto'),
    )
    .option('--overwrite', 'replace the output folder if it exists and is an earlier AWQ output (or empty); any other folder is left alone')
    .option('--keep-dtype', 'write embeddings, norms and lm_head in the source dtype (bf16/fp32) instead of fp16')
    .option('--resume', 'keep each finished layer in <out>.resume/ and continue from there after an interruption (run the same command again)')
    .option('--json', 'progress as JSON lines on stderr, the report as JSON on stdout')
    .option('--quiet', 'no progress output')
    .action(async (model: string, opts: Opts, command: Command) => {
      const ignored = opts.method === 'rtn' ? RTN_IGNORES.filter(([key]) => command.getOptionValueSource(key) === 'cli') : [];
      if (ignored.length > 0 && !opts.quiet) {
        notice(opts, `--method rtn calibrates and searches nothing: ${ignored.map(([, flag]) => flag).join(', ')} ignored`);
      }
      const calib = opts.method === 'rtn' ? undefined : await calibrationSource(opts);
      if (!calib && opts.method === 'awq' && !opts.quiet) {
        notice(
          opts,
          'no --calib given: calibrating on the general English text shipped with awq (Brown corpus). Salience is ' +
            'estimated from the calibration text; text unlike your traffic gives estimates unlike it too.',
        );
      }
      const controller = new AbortController();
      const release = abortOnSignals(controller, { json: opts.json });
      const view = progressView({ json: !!opts.json, quiet: opts.quiet });
      try {
        const { report } = await quantize({
          model,
          out: opts.out,
          overwrite: opts.overwrite,
          keepDtype: opts.keepDtype,
          resume: opts.resume,
          calib,
          nSamples: opts.samples,
          seqlen: opts.seqlen,
          wBit: opts.wBit,
          groupSize: opts.groupSize,
          zeroPoint: opts.zeroPoint,
          duoScaling: opts.duoScaling,
          clip: opts.clip,
          method: opts.method,
          threads: opts.threads,
          backend: opts.backend,
          precision: opts.precision,
          signal: controller.signal,
          onProgress: view.listener,
        });
        view.stop();
        if (opts.json) process.stdout.write(`${JSON.stringify(report)}\n`);
        else process.stdout.write(summaryTable(report, opts.out));
      } catch (err) {
        view.stop();
        // Not after errors that the same command meets again (settings, lock, existing output, damage).
        const rerunHelps = !(err instanceof InvalidArgumentError || err instanceof BadConfigError || err instanceof BadCheckpointError);
        const progress = opts.resume && rerunHelps ? await keptProgress(opts.out) : null;
        if (progress && !opts.quiet) {
          notice(
            opts,
            `${progress.layersDone} finished layer${progress.layersDone === 1 ? '' : 's'} kept in ${progress.dir}: ` +
              'run the same command again to continue after them',
            { layersDone: progress.layersDone, dir: progress.dir },
          );
        }
        throw err;
      } finally {
        view.stop();
        release();
      }
    });
}

/** The terminal summary: per layer and group, chosen ratio, loss bought, clip, salient channels. */
export function summaryTable(r: QuantizationReport, out: string): string {
  const lines: string[] = [];
  const o = r.options;
  lines.push(
    `quantized ${r.model} (${r.modelType}) -> ${out}: ${o.method} w${o.wBit} ${o.groupSize === -1 ? 'g-1 (per row)' : `g${o.groupSize}`}` +
      `${o.zeroPoint ? ' zero-point' : ' symmetric'}${o.method === 'awq' ? `${o.duoScaling ? ' duo' : ''}${o.clip ? ' clip' : ' no-clip'}` : ''}` +
      ` in ${(r.totalMs / 1000).toFixed(1)} s on ${r.backend}` +
      `${r.resumedLayers ? ` (layers 0-${r.resumedLayers - 1} kept from an earlier run)` : ''}`,
  );
  if (r.calibration) {
    lines.push(`calibration: ${r.calibration.source}, ${r.calibration.samples} samples, ${r.calibration.blocks} blocks of ${r.calibration.seqlen} tokens`);
  }
  if (o.method === 'awq') {
    lines.push('');
    lines.push('layer  group    ratio  loss(best)   loss(ratio 0)  gain    loss via  clip shrink  salient channels (mean |x|)');
    for (const l of r.layers) {
      for (const g of l.groups) {
        if (g.skipped || g.bestRatio === null || g.lossAtBest === null || g.lossAtZero === null) {
          lines.push(`${String(l.layer).padStart(5)}  ${g.group.padEnd(7)}  skipped: ${g.skipped ?? 'not searched'}`);
          continue;
        }
        const gain = g.lossAtZero > 0 ? `${(100 * (1 - g.lossAtBest / g.lossAtZero)).toFixed(1)}%` : '-';
        const clip = l.clip
          .filter((c) => g.linears.includes(c.linear))
          .map((c) => c.meanShrink.toFixed(3))
          .join('/');
        const salient = g.salientChannels
          .slice(0, 3)
          .map((s) => `${s.channel}:${s.stat.toPrecision(3)}`)
          .join(' ');
        lines.push(
          `${String(l.layer).padStart(5)}  ${g.group.padEnd(7)}  ${g.bestRatio.toFixed(2).padStart(5)}  ${g.lossAtBest.toExponential(3).padStart(10)}   ` +
            `${g.lossAtZero.toExponential(3).padStart(12)}  ${gain.padStart(6)}  ${(g.lossMethod ?? '-').padEnd(8)}  ` +
            `${(clip || '-').padEnd(11)}  ${salient}`,
        );
      }
    }
  }
  lines.push('');
  lines.push('per layer: ' + r.layers.map((l) => `${l.layer}:${(l.wallMs / 1000).toFixed(1)}s`).join(' '));
  lines.push(`report: ${out}/awq-report.json`);
  return `${lines.join('\n')}\n`;
}
