#!/usr/bin/env node
// `npm run build:cuda`: the addon with the CUDA backend, into build-cuda/Release/awq.node (where
// lib/native.ts looks for it). Plain CMake, so it also works inside an installed package
// (node_modules/awq), where no build tool from devDependencies is present, and offline: Node's
// own headers are used, nothing is downloaded.
//
//   node scripts/build-cuda.mjs [--nodedir DIR] [--archs "80;86;89;90"] [--jobs N] [--out build-cuda]
//
// --out is relative to the package's folder. Node's headers (node_api.h) come from --nodedir, else npm's `nodedir` setting, else the
// include/node folder beside the running node binary (official tarballs, nvm, Debian's nodejs).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { values: opts } = parseArgs({
  options: {
    nodedir: { type: 'string' },
    archs: { type: 'string' },
    jobs: { type: 'string' },
    out: { type: 'string', default: 'build-cuda' },
  },
});

function fail(message) {
  console.error(`build:cuda: ${message}`);
  process.exit(1);
}

function nodeIncludeDir() {
  if (opts.nodedir) {
    // Asked for by name: that folder or nothing.
    const dir = join(resolve(opts.nodedir), 'include', 'node');
    if (!existsSync(join(dir, 'node_api.h'))) fail(`--nodedir ${opts.nodedir}: no node_api.h in ${dir}`);
    return dir;
  }
  const candidates = [];
  if (process.env.npm_config_nodedir) candidates.push(join(process.env.npm_config_nodedir, 'include', 'node'));
  candidates.push(join(dirname(dirname(process.execPath)), 'include', 'node'));
  const found = candidates.find((dir) => existsSync(join(dir, 'node_api.h')));
  if (!found) {
    fail(`Node.js headers not found (no node_api.h in ${candidates.join(', ')}); ` +
      'pass --nodedir <dir with include/node> or set npm\'s nodedir');
  }
  return found;
}

function run(cmd, args) {
  console.log(`$ ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.error) fail(`${cmd} could not run: ${r.error.message}${r.error.code === 'ENOENT' ? ` (install ${cmd})` : ''}`);
  if (r.status !== 0) fail(`${cmd} exited with status ${r.status ?? r.signal}`);
}

const buildDir = resolve(root, opts.out);
// A folder configured by cmake-js (an earlier build:cuda) may use another generator, which CMake
// refuses to switch: start it afresh.
const cache = join(buildDir, 'CMakeCache.txt');
if (existsSync(cache) && readFileSync(cache, 'utf8').includes('CMAKE_JS_INC')) {
  console.log(`build:cuda: ${buildDir} was configured by cmake-js; removing it`);
  rmSync(buildDir, { recursive: true, force: true });
}
mkdirSync(buildDir, { recursive: true });
const configure = [
  '-S', root, '-B', buildDir,
  '-DCMAKE_BUILD_TYPE=Release',
  '-DAWQ_CUDA=ON',
  '-DAWQ_REQUIRE_CUDA=ON',
  `-DAWQ_NODE_INCLUDE_DIR=${nodeIncludeDir()}`,
  `-DAWQ_NODE_ADDON_API_DIR=${dirname(createRequire(join(root, 'package.json')).resolve('node-addon-api/napi.h'))}`,
  `-DCMAKE_LIBRARY_OUTPUT_DIRECTORY=${join(buildDir, 'Release')}`,
];
// Always given, so that an earlier --archs does not stay in CMake's cache.
configure.push(`-DCMAKE_CUDA_ARCHITECTURES=${opts.archs ?? '80;86;89;90'}`);
run('cmake', configure);
run('cmake', ['--build', buildDir, '--target', 'awq_addon', '-j', opts.jobs ?? String(availableParallelism())]);
console.log(`build:cuda: ${join(buildDir, 'Release', 'awq.node')}`);
