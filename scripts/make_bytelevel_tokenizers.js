#!/usr/bin/env node
// make_bytelevel_tokenizers.js: writes the byte-level BPE tokenizer.json fixtures under
// tests/data/tokenizer/bytelevel/ and their expected encodings and decodings, computed by Hugging
// Face's own tokenizers library (the Rust crate, through its Node.js binding), so the C++ reader
// (engine/hf_tokenizer.cc) is checked against the implementation real checkpoints are made with.
//
// Files in the shapes Llama 3, Qwen2 and GPT-2 ship (pre-tokenizer, normalizer, added tokens,
// post-processor, merges format) and one that exercises the rarer options, each with a vocabulary of at most 512 ids so that the tiny test
// models can serve them. The merges are learned here from tests/data/tokenizer/corpus.txt by a
// plain BPE count; nothing is taken from a published vocabulary.
//
// The results are committed; rerun only to change them (needs npm's registry):
//   npm install --prefix /tmp/hf-tokenizers @anush008/tokenizers@0.6.0
//   NODE_PATH=/tmp/hf-tokenizers/node_modules node scripts/make_bytelevel_tokenizers.js
'use strict';
const fs = require('fs');
const path = require('path');
const hf = require('@anush008/tokenizers');

const REPO = path.resolve(__dirname, '..');
const OUT = path.join(REPO, 'tests/data/tokenizer/bytelevel');
const REFERENCE = 'tokenizers 0.22.2 (Rust crate, via npm @anush008/tokenizers 0.6.0)';
const BPE_VOCAB = 500;  // 256 byte symbols + 244 merges; added tokens take ids 500..511

// GPT-2's reversible byte -> printable character map: printable Latin-1 bytes stand for themselves,
// the others (controls, space, 0x7F-0xA0, 0xAD) take code points from 256 up, in byte order.
function byteToChar() {
  const map = new Array(256);
  let next = 256;
  for (let b = 0; b < 256; ++b) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    map[b] = String.fromCodePoint(printable ? b : next++);
  }
  return map;
}
const BYTE_CHAR = byteToChar();

const LLAMA3_SPLIT = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_SPLIT = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

function added(id, content, opts = {}) {
  return {
    id, content, single_word: !!opts.single_word, lstrip: !!opts.lstrip, rstrip: !!opts.rstrip,
    normalized: !!opts.normalized, special: opts.special !== false,
  };
}

const STYLES = {
  llama3: {
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: LLAMA3_SPLIT }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    added_tokens: [
      added(500, '<|begin_of_text|>'), added(501, '<|end_of_text|>'),
      added(502, '<|reserved_special_token_0|>'), added(503, '<|reserved_special_token_1|>'),
      added(504, '<|start_header_id|>'), added(505, '<|end_header_id|>'),
      added(506, '<|reserved_special_token_2|>'), added(507, '<|eot_id|>'),
      added(508, '<|reserved_special_token_3|>'), added(509, '<|reserved_special_token_4|>'),
      added(510, '<|reserved_special_token_5|>'), added(511, '<|reserved_special_token_6|>'),
    ],
    post_processor: {
      type: 'Sequence',
      processors: [
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
        {
          type: 'TemplateProcessing',
          single: [{ SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
          pair: [
            { SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
            { SpecialToken: { id: '<|begin_of_text|>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } },
          ],
          special_tokens: { '<|begin_of_text|>': { id: '<|begin_of_text|>', ids: [500], tokens: ['<|begin_of_text|>'] } },
        },
      ],
    },
    ignore_merges: true,
    merges_as_pairs: false,
  },
  qwen2: {
    normalizer: { type: 'NFC' },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: QWEN2_SPLIT }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      ],
    },
    added_tokens: [
      added(500, '<|endoftext|>'), added(501, '<|im_start|>'), added(502, '<|im_end|>'),
      added(503, '<tool_call>', { special: false }), added(504, '</tool_call>', { special: false }),
      // The matching options real files rarely set, so that each is checked against the reference.
      added(505, '<mask>', { lstrip: true }), added(506, '<sep>', { rstrip: true }),
      added(507, '[W]', { single_word: true }),
      added(508, 'caf\u00e9!', { special: false, normalized: true }),
      added(509, '<x>', { special: false, lstrip: true, rstrip: true }),
      added(510, '<|fim_prefix|>'),
      // Written in NFD: matched in NFC text after the normalizer (the library normalizes it too).
      added(511, 'n\u0303o!', { special: false, normalized: true }),
    ],
    post_processor: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    ignore_merges: false,
    merges_as_pairs: true,
  },
  // Not a published shape: every split behaviour, inversion, a literal pattern, a normalizer
  // sequence and a template with ids after the text, so each of those paths meets the reference.
  edge: {
    normalizer: { type: 'Sequence', normalizers: [{ type: 'NFKD' }, { type: 'NFC' }] },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { String: ' ' }, behavior: 'MergedWithPrevious', invert: false },
        { type: 'Split', pattern: { Regex: '\\p{N}' }, behavior: 'Contiguous', invert: false },
        { type: 'Split', pattern: { Regex: '[,;]' }, behavior: 'Removed', invert: false },
        { type: 'Split', pattern: { Regex: '\\p{Lu}\\p{Ll}*' }, behavior: 'MergedWithNext', invert: false },
        { type: 'Split', pattern: { Regex: '[a-z]+' }, behavior: 'Isolated', invert: true },
        { type: 'Split', pattern: { Regex: '[aeiou]' }, behavior: 'Contiguous', invert: true },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    added_tokens: [added(500, '<|endoftext|>'), added(501, '<s>'), added(502, '</s>')],
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '</s>', type_id: 0 } }],
      pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: {
        '<s>': { id: '<s>', ids: [501], tokens: ['<s>'] },
        '</s>': { id: '</s>', ids: [502], tokens: ['</s>'] },
      },
    },
    ignore_merges: false,
    merges_as_pairs: true,
    // Merge 0 listed again at the end. The library lets the later place count (its map of merges
    // is collected in order); none of these texts happens to show the difference.
    duplicate_merge: 0,
    train_on_lines: true,
  },
  // Oniguruma constructs a pattern may use whose PCRE2 reading had to be made to agree: the m
  // option ('.' takes a newline: here it decides where 5-character chunks fall), line anchors
  // (DeepSeek's \\s+$), a zero-width split (before vowels, which common merges cross).
  anchors: {
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: '(?m:.{5})' }, behavior: 'Isolated', invert: false },
        { type: 'Split', pattern: { Regex: '\\s+$' }, behavior: 'Isolated', invert: false },
        { type: 'Split', pattern: { Regex: '^\\p{L}' }, behavior: 'Isolated', invert: false },
        { type: 'Split', pattern: { Regex: '(?=[aeo])' }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    added_tokens: [added(500, '<|endoftext|>')],
    post_processor: null,
    ignore_merges: false,
    merges_as_pairs: false,
    train_on_lines: true,
  },
  gpt2: {
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    added_tokens: [added(500, '<|endoftext|>')],
    post_processor: null,
    ignore_merges: false,
    merges_as_pairs: false,
    added_in_vocab: true,  // GPT-2 lists <|endoftext|> in its vocabulary too
  },
};

// Words of the corpus as the style's own pre-tokenizer (run by the reference) cuts them.
function trainMerges(corpus, preTokenizer) {
  const counts = new Map();
  for (const line of corpus.split(/(?<=\n)/)) {
    for (const [word] of preTokenizer.preTokenizeString(line)) counts.set(word, (counts.get(word) || 0) + 1);
  }
  const words = [...counts].map(([w, n]) => ({ symbols: [...w], n }));
  const vocab = new Map(BYTE_CHAR.map((c, b) => [c, b]));
  const merges = [];
  while (vocab.size < BPE_VOCAB) {
    const pairs = new Map();
    for (const { symbols, n } of words) {
      for (let i = 0; i + 1 < symbols.length; ++i) {
        const key = symbols[i] + '\u0000' + symbols[i + 1];
        pairs.set(key, (pairs.get(key) || 0) + n);
      }
    }
    let best = null;
    for (const [key, n] of pairs) {
      if (vocab.has(key.replace('\u0000', ''))) continue;
      if (!best || n > best[1] || (n === best[1] && key < best[0])) best = [key, n];
    }
    if (!best) throw new Error('corpus too small for the vocabulary');
    const [a, b] = best[0].split('\u0000');
    merges.push([a, b]);
    vocab.set(a + b, vocab.size);
    for (const w of words) {
      const out = [];
      for (let i = 0; i < w.symbols.length; ++i) {
        if (i + 1 < w.symbols.length && w.symbols[i] === a && w.symbols[i + 1] === b) {
          out.push(a + b);
          ++i;
        } else {
          out.push(w.symbols[i]);
        }
      }
      w.symbols = out;
    }
  }
  return { vocab: Object.fromEntries(vocab), merges };
}

function tokenizerJson(style, model) {
  const vocab = { ...model.vocab };
  if (style.added_in_vocab) for (const t of style.added_tokens) vocab[t.content] = t.id;
  const merges = [...model.merges];
  if (style.duplicate_merge !== undefined && merges.length > style.duplicate_merge) {
    merges.push(merges[style.duplicate_merge]);
  }
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: style.added_tokens,
    normalizer: style.normalizer,
    pre_tokenizer: style.pre_tokenizer,
    post_processor: style.post_processor,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: style.ignore_merges,
      vocab,
      merges: style.merges_as_pairs ? merges : merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

// A seeded generator (mulberry32), so the cases are the same on every run.
function rng(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const HANDWRITTEN = [
  '', ' ', 'Hello world', 'Hello, world! How are you?', "I'm here; it's fine, we'll see. He'd've",
  "DON'T SHOUT: IT'S 'LL 'Ve", '12345678 1 22 333 4444', 'x=3.14159; y = -2e10', 'a  b   c    d',
  'trailing spaces   ', '   leading spaces', 'line one\nline two\r\nline three\n\n\nend', '\t\ttabs\tand\tspaces \t ',
  'caf\u00e9 na\u00efve r\u00e9sum\u00e9', 'cafe\u0301 (combining accent)', 'caf\u00e9! and cafe\u0301!',
  '\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8', '\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440',
  '\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645', 'emoji \u{1F600}\u{1F44D}\u{1F3FD} \u{1F468}\u200D\u{1F469}\u200D\u{1F467}',
  'non\u00a0breaking\u2003em\u3000ideographic\u0085nel\u180emongolian\u200bzw\ufeffbom',
  '<|begin_of_text|>Hello<|eot_id|>', ' <|eot_id|> spaced <|start_header_id|>user<|end_header_id|>\n\n',
  '<|eot_id', '<|<|eot_id|>|>', '<|im_start|>system\nYou are helpful.<|im_end|>\n',
  '<tool_call>{"name": "f"}</tool_call>', 'a <mask> b', 'a<mask>b', 'x <sep>  y', 'x<sep>\n\ny',
  'word[W]word', 'word [W] word', '[W]', '_[W]_', '9[W]9', '<x>', '  <x>  ', 'a<x>b',
  '<|endoftext|><|endoftext|>', '\u0000control\u0001chars\u007f', 'mixed123abc456', "it's 'quoted' \"double\"",
  'snake_case_identifier and camelCaseIdentifier', '    indented code:\n        return x + 1\n',
  '!!!???...,,,;;;', 'se\u00f1or n\u0303o! and \u00f1o! and no!', 'Line one.  \nLine Two!\t\n\nThree. \n', "it'\u017F (long s folds to s) I'\u212A", '\u2028line\u2029para\u000bvt\u000cff', '$100.00 & 50% off #hashtag @user', '\u00bd \u2153 \u2460 \u0663\u0664',
];

const FRAGMENTS = [
  'the', ' quick', ' brown', 'fox', ' jumps', "'s", "'LL", "'d", "n't", '12', '345', '6', ' 7890', '.', ',', '!',
  '?', ' - ', '...', '(', ')', '"', "'", ' ', '  ', '   ', '\t', '\n', '\r\n', '\n\n', ' \n', '\u00a0', '\u3000', '\u2009',
  '\u0085', '\u180e', 'caf\u00e9', 'cafe\u0301', '\u00e9', 'e\u0301', '\u65e5\u672c', '\u043c\u0438\u0440',
  '\u{1F600}', '\u{1F468}\u200D\u{1F469}', '\u00bd', '\u0663', '_', 'x_y', 'ABC', 'aBc', '<|eot_id|>',
  '<|begin_of_text|>', '<|im_end|>', '<|endoftext|>', '<tool_call>', '<mask>', '<sep>', '[W]', '<x>', 'caf\u00e9!',
  '<|', '|>', '<', '>', '$', '%', '#', '@', '\u0000', '\u007f', 'kvserve', ' paged', ' attention',
  'n\u0303o!', '\u00f1o!', 'Upper', ' Title', '. \n', '!\n', ' \t\n', 'x\n', '\u2028',
];

function randomTexts(count, seed) {
  const r = rng(seed);
  const out = [];
  for (let i = 0; i < count; ++i) {
    let s = '';
    const parts = 1 + Math.floor(r() * 12);
    for (let k = 0; k < parts; ++k) s += FRAGMENTS[Math.floor(r() * FRAGMENTS.length)];
    out.push(s);
  }
  return out;
}

// Id sequences for decoding: any id in [0, 512), so byte tokens that split a character, special
// and non-special added tokens all occur.
function randomIdLists(count, seed) {
  const r = rng(seed);
  const out = [];
  for (let i = 0; i < count; ++i) {
    const n = 1 + Math.floor(r() * 10);
    out.push(Array.from({ length: n }, () => (r() < 0.15 ? 490 + Math.floor(r() * 22) : Math.floor(r() * 490))));
  }
  return out;
}

async function main() {
  const corpus = fs.readFileSync(path.join(REPO, 'tests/data/tokenizer/corpus.txt'), 'utf8');
  const expected = { reference: REFERENCE, styles: {} };
  const texts = [...HANDWRITTEN, ...randomTexts(160, 20261206)];
  const idLists = randomIdLists(120, 7);
  for (const [name, style] of Object.entries(STYLES)) {
    // Training only needs a pre-tokenizer: run it through the reference on an empty model. The
    // published shapes learn their merges within their own words, as real ones do; the two test
    // shapes learn them on whole lines, so that merges span their cuts and every cut shows in the ids.
    const trainer = style.train_on_lines
      ? { ...style, pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false } }
      : style;
    const bare = hf.Tokenizer.fromString(JSON.stringify(tokenizerJson(trainer, { vocab: {}, merges: [] })));
    const model = trainMerges(corpus, bare.getPreTokenizer());
    const json = tokenizerJson(style, model);
    fs.mkdirSync(path.join(OUT, name), { recursive: true });
    fs.writeFileSync(path.join(OUT, name, 'tokenizer.json'), JSON.stringify(json, null, 1) + '\n');

    const tok = hf.Tokenizer.fromFile(path.join(OUT, name, 'tokenizer.json'));
    const size = tok.getVocabSize(true);
    if (size !== BPE_VOCAB + style.added_tokens.length) throw new Error(`${name}: vocabulary of ${size}`);
    const encode = [];
    for (const text of texts) {
      const withSpecial = (await tok.encode(text, null, { addSpecialTokens: true })).getIds();
      const without = (await tok.encode(text, null, { addSpecialTokens: false })).getIds();
      encode.push({ text, ids: without, ids_with_special: withSpecial, decoded: await tok.decode(without, true) });
    }
    const decode = [];
    for (const ids of idLists) {
      decode.push({ ids, text: await tok.decode(ids, true) });
    }
    expected.styles[name] = { encode, decode };
  }
  // One case per line: small, and a regenerated file diffs case by case.
  const lines = ['{"reference": ' + JSON.stringify(REFERENCE) + ', "styles": {'];
  Object.entries(expected.styles).forEach(([name, { encode, decode }], i, all) => {
    lines.push(` ${JSON.stringify(name)}: {"encode": [`);
    encode.forEach((c, k) => lines.push('  ' + JSON.stringify(c) + (k + 1 < encode.length ? ',' : '')));
    lines.push(' ], "decode": [');
    decode.forEach((c, k) => lines.push('  ' + JSON.stringify(c) + (k + 1 < decode.length ? ',' : '')));
    lines.push(' ]}' + (i + 1 < all.length ? ',' : ''));
  });
  lines.push('}}');
  fs.writeFileSync(path.join(OUT, 'expected.json'), lines.join('\n') + '\n');
  console.log(`wrote ${OUT}: ${texts.length} texts and ${idLists.length} id lists per style`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
