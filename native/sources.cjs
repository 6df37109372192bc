// Prints the C++ sources of the given folders under native/ for binding.gyp (node-gyp has no
// globbing), so a new kernel file is built without editing the build files.
const fs = require('fs');
const path = require('path');
const out = [];
for (const dir of process.argv.slice(2)) {
  for (const f of fs.readdirSync(path.join(__dirname, dir)).sort()) {
    if (f.endsWith('.cc')) out.push(`native/${dir}/${f}`);
  }
}
console.log(out.join(' '));
