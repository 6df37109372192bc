/**
 * Edits the top-level members of a JSON object in its source text, leaving every other byte as it
 * was. config.json goes through this rather than JSON.parse + JSON.stringify, which would turn
 * `10000.0` into `10000` and `1e-06` into `0.000001`: configuration classes that check
 * `isinstance(value, float)` (Transformers 5's strict dataclass validation, remote-code configs)
 * would then refuse the output.
 */

interface Member {
  key: string;
  keyStart: number;
  valueStart: number;
  valueEnd: number;
}

/**
 * `text` with each key of `updates` set: an existing top-level member's value is replaced in place,
 * a new one is appended after the last member. Values are written with JSON.stringify, indented
 * like the object's members. Throws SyntaxError when `text` is not a JSON object.
 */
export function setTopLevelMembers(text: string, updates: Record<string, unknown>): string {
  JSON.parse(text); // the scanner below assumes valid JSON
  const { members, close } = scanTopLevel(text);
  const indent = memberIndent(text, members);
  const render = (value: unknown) => JSON.stringify(value, null, indent.unit).replace(/\n/g, `\n${indent.member}`);
  const present = new Set(members.map((m) => m.key));
  const added = Object.keys(updates).filter((k) => !present.has(k));
  let out = text;
  if (added.length > 0) {
    const lines = added.map((k) => `${indent.member}${JSON.stringify(k)}: ${render(updates[k])}`).join(',\n');
    // After the last member's value (or inside the empty braces): no member offset moves.
    out = members.length === 0
      ? `${text.slice(0, close)}\n${lines}\n${text.slice(close)}`
      : `${text.slice(0, members[members.length - 1].valueEnd)},\n${lines}${text.slice(members[members.length - 1].valueEnd)}`;
  }
  // Replacements right to left, so that the offsets of the members before stay valid.
  for (const m of [...members].reverse()) {
    if (Object.hasOwn(updates, m.key)) out = out.slice(0, m.valueStart) + render(updates[m.key]) + out.slice(m.valueEnd);
  }
  return out;
}

/** The whitespace before each member's key, and one indentation step (as the members have it). */
function memberIndent(text: string, members: Member[]): { member: string; unit: string } {
  if (members.length === 0) return { member: '  ', unit: '  ' };
  const keyStart = members[0].keyStart;
  const lineStart = text.lastIndexOf('\n', keyStart) + 1;
  const lead = text.slice(lineStart, keyStart);
  // A one-line object ({"a": 1, ...}): new members on their own lines with one space.
  if (lineStart === 0 || !/^[ \t]*$/.test(lead)) return { member: ' ', unit: '' };
  return { member: lead, unit: lead };
}

function scanTopLevel(text: string): { members: Member[]; close: number } {
  let i = skipSpace(text, 0);
  if (text[i] !== '{') throw new SyntaxError('expected a JSON object');
  i = skipSpace(text, i + 1);
  const members: Member[] = [];
  if (text[i] === '}') return { members, close: i };
  for (;;) {
    const keyStart = i;
    const keyEnd = skipString(text, i);
    const key = JSON.parse(text.slice(i, keyEnd)) as string;
    i = skipSpace(text, keyEnd);
    i = skipSpace(text, i + 1); // past ':'
    const valueStart = i;
    const valueEnd = skipValue(text, i);
    members.push({ key, keyStart, valueStart, valueEnd });
    i = skipSpace(text, valueEnd);
    if (text[i] === '}') return { members, close: i };
    i = skipSpace(text, i + 1); // past ','
  }
}

function skipSpace(text: string, i: number): number {
  while (i < text.length && ' \t\n\r'.includes(text[i])) i++;
  return i;
}

/** End (exclusive) of the string literal starting at text[i] === '"'. */
function skipString(text: string, i: number): number {
  for (let j = i + 1; j < text.length; j++) {
    if (text[j] === '\\') j++;
    else if (text[j] === '"') return j + 1;
  }
  throw new SyntaxError('unterminated string');
}

/** End (exclusive) of the JSON value starting at text[i]. */
function skipValue(text: string, i: number): number {
  const c = text[i];
  if (c === '"') return skipString(text, i);
  if (c === '{' || c === '[') {
    let depth = 0;
    for (let j = i; j < text.length; j++) {
      const d = text[j];
      if (d === '"') j = skipString(text, j) - 1;
      else if (d === '{' || d === '[') depth++;
      else if (d === '}' || d === ']') {
        depth--;
        if (depth === 0) return j + 1;
      }
    }
    throw new SyntaxError('unterminated object or array');
  }
  let j = i;
  while (j < text.length && !',}] \t\n\r'.includes(text[j])) j++;
  return j;
}
