/** `awq inspect <folder|file.safetensors>`: what a checkpoint holds, without reading tensor data. */
import { stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Command } from 'commander';

import {
  LEGACY_QUANT_CONFIG,
  openAwqCheckpoint,
  parseAwqQuantization,
  parseLegacyQuantConfig,
  readLegacyQuantConfig,
  type AwqQuantization,
} from '../checkpoint/awq-format.js';
import { readRawConfig, WeightFiles } from '../checkpoint/model-folder.js';
import { SafetensorsFile, type TensorInfo } from '../checkpoint/safetensors.js';
import { AwqError, BadConfigError, InvalidArgumentError, ioError } from '../errors.js';
import { adapterFor } from '../models/adapters.js';
import { parseModelConfig, type ModelConfig } from '../models/config.js';

export interface InspectReport {
  path: string;
  /** config.json model_type (null for a bare safetensors file). */
  modelType: string | null;
  architectures: string[];
  /** The parsed model description, or why it could not be parsed. */
  config: ModelConfig | null;
  configError: string | null;
  tensorCount: number;
  /** Sum of tensor bytes (what the index calls total_size). */
  totalBytes: number;
  dtypes: Record<string, { tensors: number; bytes: number }>;
  shards: { file: string; tensors: number; bytes: number; fileBytes: number }[];
  /** config.json quantization_config (else quant_config.json, AutoAWQ's older file) as written, or null. */
  quantization: Record<string, unknown> | null;
  /** Which file `quantization` came from. */
  quantizationFile: 'config.json' | typeof LEGACY_QUANT_CONFIG | null;
  /**
   * Tensors named `*.qweight` (AWQ-packed linears). A bare shard of an AWQ checkpoint has them
   * without the settings, which are in the folder's config.json.
   */
  packedLinears: number;
  /** Parsed AWQ settings and the number of quantized linears, when it is an AWQ checkpoint. */
  awq: (AwqQuantization & { linears: number }) | null;
  /** Why the AWQ reader (`awq eval`, `loadAwq`) would refuse this checkpoint, or null. */
  awqError: string | null;
  /**
   * Tensors of a readable AWQ checkpoint that no module of the architecture reads (e.g. a bias on
   * a linear the architecture builds without one): Transformers drops them, and so do we.
   */
  unusedTensors: string[];
}

export async function inspectCheckpoint(path: string): Promise<InspectReport> {
  let isDir: boolean;
  try {
    isDir = (await stat(path)).isDirectory();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new InvalidArgumentError(`${path}: no such file or folder`);
    throw ioError(`reading ${path}`, err);
  }
  let raw: Record<string, unknown> | null = null;
  let tensors: TensorInfo[];
  const shards: InspectReport['shards'] = [];
  if (isDir) {
    raw = await readRawConfig(path);
    const w = await WeightFiles.open(path);
    try {
      tensors = [...w.tensors.values()];
      for (const [name, f] of w.files) {
        const list = [...f.tensors.values()];
        shards.push({ file: name, tensors: list.length, bytes: list.reduce((a, t) => a + t.byteLength, 0), fileBytes: f.fileSize });
      }
    } finally {
      await w.close();
    }
  } else {
    const f = await SafetensorsFile.open(path);
    tensors = [...f.tensors.values()];
    shards.push({ file: basename(path), tensors: tensors.length, bytes: tensors.reduce((a, t) => a + t.byteLength, 0), fileBytes: f.fileSize });
    await f.close();
  }

  const dtypes: InspectReport['dtypes'] = {};
  for (const t of tensors) {
    const d = (dtypes[t.dtype] ??= { tensors: 0, bytes: 0 });
    d.tensors++;
    d.bytes += t.byteLength;
  }
  const packedLinears = tensors.filter((t) => t.name.endsWith('.qweight')).length;
  let config: ModelConfig | null = null;
  let configError: string | null = null;
  let awq: InspectReport['awq'] = null;
  let awqError: string | null = null;
  let unusedTensors: string[] = [];
  if (raw) {
    const source = join(path, 'config.json');
    try {
      config = parseModelConfig(raw, source);
    } catch (err) {
      if (!(err instanceof AwqError)) throw err;
      configError = err.message;
    }
  }
  let qc: unknown = raw?.quantization_config ?? null;
  let quantizationFile: InspectReport['quantizationFile'] = qc === null ? null : 'config.json';
  if (raw && qc === null) {
    try {
      qc = await readLegacyQuantConfig(path);
    } catch (err) {
      if (!(err instanceof BadConfigError)) throw err;
      awqError = err.message;
    }
    if (qc !== null) quantizationFile = LEGACY_QUANT_CONFIG;
  }
  if (raw && qc !== null) {
    try {
      // parsed from what was read above (readAwqQuantization would read quant_config.json again)
      const q = quantizationFile === LEGACY_QUANT_CONFIG ? parseLegacyQuantConfig(qc, path) : parseAwqQuantization(raw, join(path, 'config.json'));
      awq = { ...q, linears: packedLinears };
      // The reader's own checks (headers only: every linear's tensors, dtypes and shapes, and
      // every tensor the architecture reads).
      const ckpt = await openAwqCheckpoint(path);
      try {
        unusedTensors = ckpt.checkComplete().unused;
      } finally {
        await ckpt.close();
      }
    } catch (err) {
      if (!(err instanceof AwqError)) throw err;
      // Settings that say AWQ but are not readable (another version or width) are worth a warning;
      // another method's quantization_config (GPTQ, ...) is simply not AWQ.
      const saysAwq = quantizationFile === LEGACY_QUANT_CONFIG || (qc as { quant_method?: unknown }).quant_method === 'awq';
      if (awq || saysAwq) awqError = err.message;
      else if (!(err instanceof BadConfigError)) throw err;
    }
  }
  return {
    path,
    modelType: typeof raw?.model_type === 'string' ? raw.model_type : null,
    architectures: Array.isArray(raw?.architectures) ? (raw.architectures as unknown[]).map(String) : [],
    config,
    configError,
    tensorCount: tensors.length,
    totalBytes: tensors.reduce((a, t) => a + t.byteLength, 0),
    dtypes,
    shards,
    quantization: qc && typeof qc === 'object' && !Array.isArray(qc) ? (qc as Record<string, unknown>) : null,
    quantizationFile,
    packedLinears,
    awq,
    awqError,
    unusedTensors,
  };
}

function human(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${bytes} B` : `${v.toFixed(2)} ${units[u]}`;
}

/** Which linears carry a bias, as the architecture builds them (adapter's `biased`). */
function biasLabel(c: ModelConfig): string {
  const biased = [...adapterFor(c).biased].map((n) => n[0]);
  return biased.length > 0 ? `, ${biased.join('/')} bias` : '';
}

function formatReport(r: InspectReport): string {
  const lines = [`${r.path}`];
  if (r.modelType !== null) {
    lines.push(`architecture: ${r.modelType}${r.architectures.length ? ` (${r.architectures.join(', ')})` : ''}`);
  }
  if (r.config) {
    const c = r.config;
    lines.push(
      `  ${c.numLayers} layers, hidden ${c.hiddenSize}, intermediate ${c.intermediateSize}, heads ${c.numHeads}/${c.numKvHeads} kv, ` +
        `head_dim ${c.headDim}, vocab ${c.vocabSize}${c.tieWordEmbeddings ? ', tied embeddings' : ''}` +
        `${biasLabel(c)}${c.qkNorm ? ', q/k norm' : ''}` +
        `${c.ropeScaling ? `, rope_scaling ${c.ropeScaling.type} x${c.ropeScaling.factor}` : ''}`,
    );
  } else if (r.configError) {
    lines.push(`  config: ${r.configError}`);
  }
  lines.push(`tensors: ${r.tensorCount}, ${human(r.totalBytes)} (${r.totalBytes} bytes)`);
  for (const [d, v] of Object.entries(r.dtypes).sort((a, b) => b[1].bytes - a[1].bytes)) {
    lines.push(`  ${d.padEnd(5)} ${String(v.tensors).padStart(6)} tensors  ${human(v.bytes).padStart(11)}`);
  }
  lines.push(`shards: ${r.shards.length}`);
  for (const s of r.shards) lines.push(`  ${s.file}  ${s.tensors} tensors  ${human(s.fileBytes)}`);
  if (r.quantization) {
    lines.push(`quantization${r.quantizationFile === 'config.json' ? '' : ` (${r.quantizationFile})`}: ${JSON.stringify(r.quantization)}`);
    if (r.awq) lines.push(`  AWQ ${r.awq.bits}-bit, group ${r.awq.groupSize === -1 ? '-1 (one per row)' : r.awq.groupSize}, ${r.awq.version}: ${r.awq.linears} quantized linears`);
    if (r.awqError) lines.push(`  warning: not readable as an AWQ checkpoint: ${r.awqError}`);
    if (r.unusedTensors.length > 0) {
      const shown = r.unusedTensors.slice(0, 5).join(', ') + (r.unusedTensors.length > 5 ? ` and ${r.unusedTensors.length - 5} more` : '');
      lines.push(`  note: ${r.unusedTensors.length} tensor(s) no ${r.config?.modelType ?? ''} module reads, ignored as Transformers ignores them: ${shown}`);
    }
  } else if (r.packedLinears > 0 && r.modelType === null) {
    // one shard of a quantized checkpoint: the settings live in the folder's config.json
    lines.push(`quantization: ${r.packedLinears} AWQ-packed linears (qweight, qzeros, scales); the settings are in the model folder's config.json (inspect the folder)`);
  } else {
    lines.push('quantization: none');
    if (r.packedLinears > 0) lines.push(`  warning: ${r.packedLinears} AWQ-packed linears (qweight tensors) but no quantization_config`);
    if (r.awqError) lines.push(`  warning: ${r.awqError}`);
  }
  return lines.join('\n');
}

export function registerInspect(program: Command): void {
  program
    .command('inspect')
    .description('print a checkpoint\'s architecture, dtypes, tensor count and bytes, shards and quantization config')
    .argument('<path>', 'a model folder (config.json + safetensors) or one .safetensors file')
    .option('--json', 'print a JSON object (modelType, tensorCount, totalBytes, shards, quantization, ...)')
    .action(async (path: string, opts: { json?: boolean }) => {
      const report = await inspectCheckpoint(path);
      process.stdout.write(`${opts.json ? JSON.stringify(report, null, 2) : formatReport(report)}\n`);
    });
}
