#!/usr/bin/env node
// Quantizes all decoder layers of ../shared/models/llama-22m with quantizeDecoderLayer and
// evaluates the fake-quantized model (dequantized integer weights, folded norms) on the first
// N windows of eval.txt: a check of the numerics against REFERENCE.md section 8, before the
// pipeline and checkpoint writer exist. Not part of CI (minutes on 2 cores).
//   node benchmarks/quality-native.mjs [--method awq|rtn] [--w-bit 4] [--group-size 128] [--windows 64] [--json]
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { Tokenizer } from '@huggingface/tokenizers';

import { decoderLayerForward, lmHeadNll, quantizeDecoderLayer } from '../dist/index.js';

const { values: args } = parseArgs({
  options: {
    method: { type: 'string', default: 'awq' },
    'w-bit': { type: 'string', default: '4' },
    'group-size': { type: 'string', default: '128' },
    windows: { type: 'string', default: '64' },
    'no-clip': { type: 'boolean', default: false },
    plain: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
});
const root = join(import.meta.dirname, '..', '..', 'shared');
const dir = join(root, 'models', 'llama-22m');
const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
const weightMap = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8')).weight_map;
const shards = new Map();
function tensor(name) {
  const file = weightMap[name];
  let s = shards.get(file);
  if (!s) {
    const data = readFileSync(join(dir, file));
    const n = Number(data.readBigUInt64LE(0));
    s = { header: JSON.parse(data.subarray(8, 8 + n).toString('utf8')), data, base: 8 + n };
    shards.set(file, s);
  }
  const e = s.header[name];
  const [b0, b1] = e.data_offsets;
  const u16 = new Uint16Array(s.data.buffer.slice(s.data.byteOffset + s.base + b0, s.data.byteOffset + s.base + b1));
  const out = new Float32Array(u16.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < u16.length; i++) bits[i] = u16[i] << 16;
  return out;
}
const H = config.hidden_size;
const headDim = config.head_dim ?? H / config.num_attention_heads;
const inv = new Float32Array(headDim / 2);
for (let i = 0; i < headDim / 2; i++) inv[i] = 1 / Math.pow(config.rope_theta, (2 * i) / headDim);
const arch = {
  hiddenSize: H, intermediateSize: config.intermediate_size, numHeads: config.num_attention_heads,
  numKvHeads: config.num_key_value_heads, headDim, rmsNormEps: config.rms_norm_eps, ropeInvFreq: inv, qkNorm: false,
};
const layerWeights = (i) => {
  const p = `model.layers.${i}.`;
  return {
    inputNorm: tensor(p + 'input_layernorm.weight'), postNorm: tensor(p + 'post_attention_layernorm.weight'),
    q: tensor(p + 'self_attn.q_proj.weight'), k: tensor(p + 'self_attn.k_proj.weight'), v: tensor(p + 'self_attn.v_proj.weight'),
    o: tensor(p + 'self_attn.o_proj.weight'), gate: tensor(p + 'mlp.gate_proj.weight'), up: tensor(p + 'mlp.up_proj.weight'),
    down: tensor(p + 'mlp.down_proj.weight'),
  };
};
const E = tensor('model.embed_tokens.weight');
const embed = (ids) => {
  const out = new Float32Array(ids.length * H);
  for (let t = 0; t < ids.length; t++) out.set(E.subarray(ids[t] * H, (ids[t] + 1) * H), t * H);
  return out;
};
const tok = new Tokenizer(JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')), JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')));
const encode = (text) => tok.encode(text, { add_special_tokens: false }).ids;

// calibration, REFERENCE.md section 2
const seqlen = 512;
const samples = [];
let accepted = 0;
for (const line of readFileSync(join(root, 'data', 'calib.jsonl'), 'utf8').split('\n')) {
  if (!line.trim()) continue;
  const ids = encode(JSON.parse(line).text.trim());
  if (ids.length === 0 || ids.length > seqlen) continue;
  samples.push(...ids);
  if (++accepted >= 128) break;
}
const blocks = Math.floor(samples.length / seqlen);
const calib = Int32Array.from(samples.slice(0, blocks * seqlen));

const opts = { wBit: Number(args['w-bit']), groupSize: Number(args['group-size']), zeroPoint: true, duoScaling: !args.plain, clip: !args['no-clip'], method: args.method };
const t0 = performance.now();
let hidden = embed(calib);
const fake = [];
const totals = { forward: 0, scaleSearch: 0, clipSearch: 0, quantize: 0, gflop: 0 };
const dequant = (l) => {
  const w = new Float32Array(l.out * l.in);
  const gpr = l.in / l.groupSize;
  for (let r = 0; r < l.out; r++)
    for (let c = 0; c < l.in; c++) {
      const gi = r * gpr + Math.floor(c / l.groupSize);
      w[r * l.in + c] = (l.q[r * l.in + c] - l.zeros[gi]) * l.scales[gi];
    }
  return w;
};
for (let i = 0; i < config.num_hidden_layers; i++) {
  const tl = performance.now();
  const r = await quantizeDecoderLayer(arch, layerWeights(i), hidden, seqlen, opts);
  hidden = r.output;
  const L = r.linears;
  fake.push({
    inputNorm: r.inputNorm, postNorm: r.postNorm, q: dequant(L.q_proj), k: dequant(L.k_proj), v: dequant(L.v_proj),
    o: dequant(L.o_proj), gate: dequant(L.gate_proj), up: dequant(L.up_proj), down: dequant(L.down_proj),
  });
  const t = r.report.timingsMs;
  for (const k of Object.keys(t)) totals[k] += t[k];
  totals.gflop += r.report.gflop;
  const ratios = r.report.groups.map((g) => `${g.group}=${g.skipped ? 'skip' : g.bestRatio.toFixed(2)}`).join(' ');
  const shr = r.report.clip.map((c) => `${c.linear.replace('_proj', '')}:${c.meanShrink.toFixed(3)}`).join(' ');
  if (!args.json) console.log(`layer ${i}: ${((performance.now() - tl) / 1000).toFixed(1)} s (fwd ${(t.forward / 1000).toFixed(1)}, scale ${(t.scaleSearch / 1000).toFixed(1)}, clip ${(t.clipSearch / 1000).toFixed(1)}, quant ${(t.quantize / 1000).toFixed(2)}) ${(r.report.gflop / ((t.forward + t.scaleSearch + t.clipSearch) / 1000)).toFixed(1)} GFLOP/s | ${ratios} | ${shr}`);
}
const quantSeconds = (performance.now() - t0) / 1000;

const windows = Number(args.windows);
const evalIds = Int32Array.from(encode(readFileSync(join(root, 'data', 'eval.txt'), 'utf8')).slice(0, windows * seqlen));
let h = embed(evalIds);
for (const w of fake) h = await decoderLayerForward(arch, w, h, seqlen);
const nll = await lmHeadNll(h, seqlen, tensor('model.norm.weight'), config.rms_norm_eps, E, config.vocab_size, evalIds);
const ppl = Math.exp(nll.nllSum / nll.count);
const result = { method: opts.method, wBit: opts.wBit, groupSize: opts.groupSize, calibBlocks: blocks, windows, perplexity: ppl, quantizeSeconds: quantSeconds, phaseSeconds: Object.fromEntries(Object.entries(totals).map(([k, v]) => [k, k === 'gflop' ? v : v / 1000])) };
if (args.json) console.log(JSON.stringify(result));
else console.log(`${opts.method} w${opts.wBit} g${opts.groupSize}: perplexity ${ppl.toFixed(3)} on ${windows} windows; calibration ${blocks} blocks; quantize ${quantSeconds.toFixed(1)} s; phases (s) ${JSON.stringify(result.phaseSeconds)}`);
