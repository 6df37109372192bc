import { describe, expect, it } from 'vitest';

import { setTopLevelMembers } from '../lib/checkpoint/json-edit.js';

describe('setTopLevelMembers', () => {
  const src = '{\n  "architectures": ["LlamaForCausalLM"],\n  "rope_theta": 10000.0,\n  "rms_norm_eps": 1e-06,\n' +
    '  "torch_dtype": "bfloat16",\n  "nested": {"torch_dtype": "bfloat16", "s": "a\\"}b"}\n}\n';

  it('replaces and appends top-level members, keeping every other byte (float lexemes, nested keys)', () => {
    const out = setTopLevelMembers(src, { torch_dtype: 'float16', quantization_config: { bits: 4, zero_point: true } });
    expect(out).toContain('"rope_theta": 10000.0,');
    expect(out).toContain('"rms_norm_eps": 1e-06,');
    expect(out).toContain('"nested": {"torch_dtype": "bfloat16", "s": "a\\"}b"}');
    expect(out).toContain('"torch_dtype": "float16",');
    expect(out).toContain('  "quantization_config": {\n    "bits": 4,\n    "zero_point": true\n  }\n}\n');
    const parsed = JSON.parse(out);
    expect(parsed).toEqual({ ...JSON.parse(src), torch_dtype: 'float16', quantization_config: { bits: 4, zero_point: true } });
  });

  it('replaces the last member and appends after it', () => {
    const out = setTopLevelMembers('{"a": 1.0, "b": [1, {"c": "}"}]}', { b: 2, d: null });
    expect(JSON.parse(out)).toEqual({ a: 1, b: 2, d: null });
    expect(out.startsWith('{"a": 1.0, "b": 2,')).toBe(true);
  });

  it('handles an empty object and refuses what is not a JSON object', () => {
    expect(JSON.parse(setTopLevelMembers('{ }', { a: [1] }))).toEqual({ a: [1] });
    expect(() => setTopLevelMembers('[1]', { a: 1 })).toThrow(SyntaxError);
    expect(() => setTopLevelMembers('{"a": ', { a: 1 })).toThrow(SyntaxError);
  });
});
