#!/usr/bin/env node
// Writes fixtures/bpe_trainer.json: the ids that Hugging Face's own tokenizers give for a few texts
// with fixtures/bpe_trainer/tokenizer.json, the file mote's BPE trainer wrote (regenerate it with
// `MOTE_WRITE_BPE_FIXTURE=1 mote_tests --run_test=test_bpe_trainer`, then run this script).
// Two independent readers of the file must agree: npm `tokenizers` (Hugging Face's Rust library)
// and `@huggingface/tokenizers` (the JavaScript tokenizers of transformers.js).
// Run once:  cd tests/reference && npm install && node make_bpe_trainer_fixtures.js
'use strict';
const fs = require('fs');
const path = require('path');
const { Tokenizer: RustTokenizer } = require('tokenizers');
const { Tokenizer: JsTokenizer } = require('@huggingface/tokenizers');

const file = path.join(__dirname, 'fixtures', 'bpe_trainer', 'tokenizer.json');
const vocabSize = 360;

const texts = [
  'The quick brown fox jumps over the lazy dog.',
  '<|analysis|>Think about the question first.<|response|>Then answer it.<|endoftext|>',
  "I'm sure they've said we'll go; it's theirs, isn't it? THEY'RE LOUD'S 'tis",
  'Unseen words: xylophone, quizzical, jubilant zephyrs.',
  'café naïve façade résumé Ångström',
  'Привет, мир! 日本語のテキスト 한국어 텍스트',
  'Emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇯🇵 keycap 1️⃣',
  'spaces   between    words\tand\t\ttabs\n\n  indented\n   ',
  'Numbers 0 12 345 6789 3.14159 1,000,000 2024-05-17 007',
  'def merge(pairs):\n    return [a + b for a, b in pairs]  # merged\n',
  'x<|endoftext|>y<|endoftext|><|endoftext|> <|response|> partial <|endoftext| and <|analysis|',
  'control\u0001chars\u0000nul\u007fdel\r\nCRLF\u000bvt\u000cff',
  'combining e\u0301 a\u0308 zero\u200bwidth nbsp\u00a0here ideographic\u3000space',
  'the the then there these their theirs them',
  ' ',
];

async function main() {
  const json = fs.readFileSync(file, 'utf8');
  const rust = RustTokenizer.fromString(json);
  const js = new JsTokenizer(JSON.parse(json), {});
  if (rust.getVocabSize(true) !== vocabSize) throw new Error(`tokenizers reads ${rust.getVocabSize(true)} tokens, expected ${vocabSize}`);
  const lines = [];
  for (const text of texts) {
    const ids = (await rust.encode(text, null, { addSpecialTokens: false })).getIds();
    const jsIds = js.encode(text, { add_special_tokens: false }).ids;
    if (JSON.stringify(ids) !== JSON.stringify(jsIds))
      throw new Error(`the references disagree on ${JSON.stringify(text)}: ${ids} vs ${jsIds}`);
    if ((await rust.decode(ids, false)) !== text || js.decode(ids, { skip_special_tokens: false }) !== text)
      throw new Error(`a reference does not round-trip ${JSON.stringify(text)}`);
    lines.push(`    {"text": ${JSON.stringify(text)}, "ids": [${ids.join(', ')}]}`);
  }
  const version = (name) => require(path.join(__dirname, 'node_modules', name, 'package.json')).version;
  const source = `make_bpe_trainer_fixtures.js: tokenizers ${version('tokenizers')} and @huggingface/tokenizers ` +
                 `${version('@huggingface/tokenizers')} on fixtures/bpe_trainer/tokenizer.json`;
  const out = `{\n  "source": ${JSON.stringify(source)},\n  "cases": [\n${lines.join(',\n')}\n  ]\n}\n`;
  fs.writeFileSync(path.join(__dirname, 'fixtures', 'bpe_trainer.json'), out);
  console.log(`wrote ${texts.length} cases`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
