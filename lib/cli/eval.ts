/** `awq eval <folder> --text file`: perplexity of a dense or AWQ model (REFERENCE.md section 7). */
import { Option, type Command } from 'commander';

import { evaluate } from '../eval/perplexity.js';
import { abortOnSignals, progressView } from './progress-view.js';
import { MAX_THREADS } from '../backends.js';
import { pathValue, positiveDecimal } from './parse.js';
import { version } from '../version.js';

export function registerEval(program: Command): void {
  program
    .command('eval')
    .description('perplexity of a model folder (Hugging Face or AWQ) on a text file')
    .argument('<folder>', 'model folder')
    .requiredOption('--text <file>', 'evaluation text (tokenized as a whole, no special tokens)', pathValue('--text'))
    .option('--seqlen <n>', 'window length in tokens (at least 2: one predicted token)', positiveDecimal('--seqlen', Number.MAX_SAFE_INTEGER, 2), 512)
    .option('--windows <n>', 'evaluate only the first N windows', positiveDecimal('--windows'))
    .option('--threads <n>', 'native threads (default: all cores)', positiveDecimal('--threads', MAX_THREADS))
    .addOption(
      new Option('--backend <b>', 'where the decoder layers run (cuda: device 0; auto: CUDA when a CUDA build sees a device)')
        .choices(['cpu', 'cuda', 'auto'])
        .default('cpu'),
    )
    .option('--json', 'print a JSON object (progress as JSON lines on stderr)')
    .option('--quiet', 'no progress output')
    .action(async (folder: string, opts: { text: string; seqlen: number; windows?: number; threads?: number; backend: 'cpu' | 'cuda' | 'auto'; json?: boolean; quiet?: boolean }) => {
      const controller = new AbortController();
      const release = abortOnSignals(controller, { json: opts.json });
      const view = progressView({ json: !!opts.json, quiet: opts.quiet }, 'window');
      try {
        const r = await evaluate({
          model: folder,
          textPath: opts.text,
          seqlen: opts.seqlen,
          windows: opts.windows,
          threads: opts.threads,
          backend: opts.backend,
          signal: controller.signal,
          onProgress: view.listener,
        });
        view.stop();
        if (opts.json) {
          process.stdout.write(
            `${JSON.stringify({
              perplexity: r.perplexity, meanNll: r.meanNll, tokens: r.tokens, windows: r.windows, availableWindows: r.availableWindows,
              seqlen: r.seqlen, predictedTokens: r.predictedTokens, quantized: r.quantized, backend: r.backend, threads: r.threads,
              seconds: r.elapsedMs / 1000, awqVersion: version, node: process.versions.node,
            })}\n`,
          );
        } else {
          process.stdout.write(
            `perplexity ${r.perplexity.toFixed(3)} over ${r.windows} windows of ${r.seqlen} tokens ` +
              `(${r.tokens} tokens, ${r.predictedTokens} predicted; ${r.quantized ? 'AWQ checkpoint' : 'full precision'}; ${r.backend}; ${(r.elapsedMs / 1000).toFixed(1)} s)\n`,
          );
        }
      } finally {
        view.stop();
        release();
      }
    });
}
