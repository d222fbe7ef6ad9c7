#pragma once
// mote::io::Tokenizer: GPT-2 byte-level BPE loaded from vocab.json + merges.txt (or GPT-2's
// encoder.json + vocab.bpe) or a Hugging Face tokenizer.json, which may also hold Llama-style
// SentencePiece BPE with byte fallback; added special tokens are matched before pre-tokenization
// and can be registered at run time.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mote/core/error.hpp"
#include "mote/io/json.hpp"
#include "mote/io/tokenizer_bpe.hpp"

namespace mote::io {

class Tokenizer {
 public:
  using token_id = bpe::token_id;

  Tokenizer() = default;
  // A tokenizer over an already built model; special tokens are added afterwards.
  explicit Tokenizer(bpe::Model model) : model_(std::move(model)) {}

  // vocab.json (token -> id) and merges.txt (one "a b" merge a line, optional "#version" first
  // line). Each of `special_tokens` found in the vocabulary is matched whole in text.
  static Tokenizer from_vocab_merges(const std::filesystem::path& vocab_json, const std::filesystem::path& merges_txt,
                                     const std::vector<std::string>& special_tokens = {"<|endoftext|>"}) {
    const json::Value vocab_doc = json::parse_file(vocab_json);
    const std::string vsrc = vocab_json.string();
    if (!vocab_doc.is_object()) throw io_error("mote: " + vsrc + ": expected a JSON object of token -> id");
    auto vocab = read_vocab(vocab_doc, vsrc);

    const std::string text = read_text(merges_txt);
    const std::string msrc = merges_txt.string();
    std::vector<bpe::Model::Merge> merges;
    std::vector<std::size_t> lines;  // file line of each merge, for messages
    std::size_t line_no = 0;
    for (std::size_t pos = 0; pos < text.size();) {
      std::size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      std::string_view line(text.data() + pos, end - pos);
      pos = end + 1;
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
      const std::size_t sp = line.find(' ');
      if (sp == std::string_view::npos || sp == 0 || sp + 1 == line.size() || line.find(' ', sp + 1) != std::string_view::npos)
        throw io_error("mote: " + msrc + ": line " + std::to_string(line_no) +
                       ": expected two tokens separated by one space, got '" + std::string(line) + "'");
      merges.push_back({std::string(line.substr(0, sp)), std::string(line.substr(sp + 1))});
      lines.push_back(line_no);
    }
    Tokenizer t(bpe::Model(vocab, merges, vsrc,
                           [&](std::size_t k) { return msrc + ": line " + std::to_string(lines[k]); }));
    for (const auto& s : special_tokens)
      if (const token_id* id = t.model_.find(s)) t.add_special(s, *id);
    return t;
  }

  // A Hugging Face tokenizer.json holding byte-level BPE (GPT-2, RoBERTa and the like) or Llama-style
  // SentencePiece BPE (Prepend/Replace "▁" normalizer, byte fallback).
  static Tokenizer from_tokenizer_json(const std::filesystem::path& file) {
    const std::string src = file.string();
    const json::Value doc = json::parse_file(file);
    if (!doc.is_object()) throw io_error("mote: " + src + ": expected a JSON object");
    const json::Value* model = doc.find("model");
    if (model == nullptr || !model->is_object()) throw io_error("mote: " + src + ": expected an object \"model\"");
    if (const json::Value* type = model->find("type"); type != nullptr && !(type->is_string() && type->as_string() == "BPE"))
      throw io_error("mote: " + src + ": model.type: expected \"BPE\", got " + json::dump(*type));
    unsupported_if(*model, "continuing_subword_prefix", src, "model");
    unsupported_if(*model, "end_of_word_suffix", src, "model");
    unsupported_if(*model, "dropout", src, "model");
    bpe::Model::Options options;
    if (is_sentencepiece_normalizer(doc.find("normalizer"))) {
      // Llama's layout: the normalizer spells spaces as "▁" and the model splits into characters.
      if (const json::Value* pre = doc.find("pre_tokenizer"); pre != nullptr && !pre->is_null())
        throw io_error("mote: " + src + ": pre_tokenizer: expected null beside the SentencePiece normalizer, got " +
                       json::dump(*pre));
      options.symbols = bpe::Symbols::characters;
      if (const json::Value* v = model->find("byte_fallback"); v != nullptr && v->is_bool()) options.byte_fallback = v->as_bool();
      if (const json::Value* v = model->find("unk_token"); v != nullptr && v->is_string()) options.unk_token = v->as_string();
      if (const json::Value* v = model->find("fuse_unk"); v != nullptr && v->is_bool()) options.fuse_unk = v->as_bool();
    } else {
      unsupported_if(doc, "normalizer", src, "");
      unsupported_if(*model, "byte_fallback", src, "model");
      check_pre_tokenizer(doc.find("pre_tokenizer"), src);
    }

    const json::Value* vocab_v = model->find("vocab");
    if (vocab_v == nullptr || !vocab_v->is_object())
      throw io_error("mote: " + src + ": model.vocab: expected an object of token -> id");
    auto vocab = read_vocab(*vocab_v, src + ": model.vocab");

    const json::Value* merges_v = model->find("merges");
    if (merges_v == nullptr || !merges_v->is_array())
      throw io_error("mote: " + src + ": model.merges: expected an array of merges");
    std::vector<bpe::Model::Merge> merges;
    merges.reserve(merges_v->size());
    const auto where = [&](std::size_t k) { return src + ": model.merges[" + std::to_string(k) + "]"; };
    for (std::size_t k = 0; k < merges_v->size(); ++k) {
      const json::Value& m = merges_v->at(k);
      if (m.is_string()) {
        const std::string& s = m.as_string();
        const std::size_t sp = s.find(' ');
        if (sp == std::string::npos || sp == 0 || sp + 1 == s.size() || s.find(' ', sp + 1) != std::string::npos)
          throw io_error("mote: " + where(k) + ": expected \"a b\" (two tokens, one space), got " + json::dump(m));
        merges.push_back({s.substr(0, sp), s.substr(sp + 1)});
      } else if (m.is_array() && m.size() == 2 && m.at(std::size_t{0}).is_string() && m.at(std::size_t{1}).is_string()) {
        merges.push_back({m.at(std::size_t{0}).as_string(), m.at(std::size_t{1}).as_string()});
      } else {
        throw io_error("mote: " + where(k) + ": expected \"a b\" or [\"a\", \"b\"], got " + json::dump(m));
      }
    }
    Tokenizer t(bpe::Model(vocab, merges, src + ": model.vocab", where, options));

    if (const json::Value* added = doc.find("added_tokens"); added != nullptr && !added->is_null()) {
      if (!added->is_array()) throw io_error("mote: " + src + ": added_tokens: expected an array");
      for (std::size_t k = 0; k < added->size(); ++k) {
        const json::Value& a = added->at(k);
        const std::string here = src + ": added_tokens[" + std::to_string(k) + "]";
        const json::Value* id = a.is_object() ? a.find("id") : nullptr;
        const json::Value* content = a.is_object() ? a.find("content") : nullptr;
        if (id == nullptr || !id->is_integer() || content == nullptr || !content->is_string())
          throw io_error("mote: " + here + ": expected an object with an integer \"id\" and a string \"content\"");
        const std::int64_t v = id->as_int64();
        if (v < 0 || v > std::numeric_limits<token_id>::max())
          throw io_error("mote: " + here + ": id " + std::to_string(v) + " is outside 0.." +
                         std::to_string(std::numeric_limits<token_id>::max()));
        const std::string& text = content->as_string();
        if (text.empty()) throw io_error("mote: " + here + ": empty content");
        const auto tid = static_cast<token_id>(v);
        if (t.model_.has_id(tid) && t.model_.token(tid) != text)
          throw io_error("mote: " + here + ": id " + std::to_string(v) + " is already the vocabulary token '" +
                         t.model_.token(tid) + "', not '" + text + "'");
        if (const auto it = t.special_ids_.find(text); it != t.special_ids_.end() && it->second != tid)
          throw io_error("mote: " + here + ": '" + text + "' is listed twice, with ids " + std::to_string(it->second) +
                         " and " + std::to_string(v));
        if (const auto it = t.special_text_.find(tid); it != t.special_text_.end() && it->second != text)
          throw io_error("mote: " + here + ": id " + std::to_string(v) + " is given to both '" + it->second + "' and '" +
                         text + "'");
        t.add_special(text, tid);
      }
    }
    return t;
  }

  // tokenizer.json when present, else vocab.json + merges.txt, else GPT-2's encoder.json + vocab.bpe.
  static Tokenizer from_dir(const std::filesystem::path& dir) {
    namespace fs = std::filesystem;
    if (fs::exists(dir / "tokenizer.json")) return from_tokenizer_json(dir / "tokenizer.json");
    if (fs::exists(dir / "vocab.json") && fs::exists(dir / "merges.txt"))
      return from_vocab_merges(dir / "vocab.json", dir / "merges.txt");
    if (fs::exists(dir / "encoder.json") && fs::exists(dir / "vocab.bpe"))
      return from_vocab_merges(dir / "encoder.json", dir / "vocab.bpe");
    throw io_error("mote: tokenizer directory '" + dir.string() +
                   "' holds none of tokenizer.json, vocab.json + merges.txt, encoder.json + vocab.bpe");
  }

  // Text -> ids; special tokens in the text are matched whole (earliest first, longest on a tie).
  std::vector<token_id> encode(std::string_view text) const {
    std::vector<token_id> out;
    std::vector<std::size_t> next(specials_.size(), 0);
    std::vector<bool> fresh(specials_.size(), false);
    std::size_t pos = 0;
    while (pos < text.size()) {
      std::size_t best = std::string_view::npos, best_len = 0;
      token_id best_id = 0;
      for (std::size_t s = 0; s < specials_.size(); ++s) {
        if (!fresh[s] || (next[s] != std::string_view::npos && next[s] < pos)) {
          next[s] = text.find(specials_[s].first, pos);
          fresh[s] = true;
        }
        const std::size_t len = specials_[s].first.size();
        if (next[s] != std::string_view::npos && (next[s] < best || (next[s] == best && len > best_len)))
          best = next[s], best_len = len, best_id = specials_[s].second;
      }
      const std::size_t stop = best == std::string_view::npos ? text.size() : best;
      encode_span(text.substr(pos, stop - pos), pos, out);
      if (best == std::string_view::npos) break;
      out.push_back(best_id);
      pos = best + best_len;
    }
    return out;
  }

  // Text -> ids with special tokens treated as ordinary text (what GPT-2's reference encoder does).
  std::vector<token_id> encode_ordinary(std::string_view text) const {
    std::vector<token_id> out;
    encode_span(text, 0, out);
    return out;
  }

  // Ids -> the exact bytes they stand for; an id outside the vocabulary is a value_error.
  std::string decode(std::span<const token_id> ids) const {
    std::string out;
    for (std::size_t k = 0; k < ids.size(); ++k) {
      const token_id id = ids[k];
      if (const auto it = special_text_.find(id); it != special_text_.end()) {
        out += it->second;
        continue;
      }
      if (!model_.has_id(id)) {
        if (id >= 0 && id < vocab_size())
          throw value_error("mote: tokenizer: token id " + std::to_string(id) + " (position " + std::to_string(k) +
                            ") is unassigned in this vocabulary of size " + std::to_string(vocab_size()));
        throw value_error("mote: tokenizer: token id " + std::to_string(id) + " (position " + std::to_string(k) +
                          ") is outside the vocabulary of size " + std::to_string(vocab_size()));
      }
      out += model_.token_bytes(id);
    }
    // SentencePiece text starts with the "▁" its normalizer prepended: drop that one space.
    if (model_.options().symbols == bpe::Symbols::characters && !out.empty() && out.front() == ' ') out.erase(0, 1);
    return out;
  }

  // Registers `content` as a special token and returns its id: its existing id when it is already
  // a token, otherwise the next free id (vocab_size() before the call).
  token_id add_special_token(std::string_view content) {
    if (content.empty()) throw value_error("mote: tokenizer: a special token cannot be empty");
    const std::string text(content);
    if (const auto it = special_ids_.find(text); it != special_ids_.end()) return it->second;
    if (const token_id* id = model_.find(text)) {
      add_special(text, *id);
      return *id;
    }
    if (vocab_size() >= std::numeric_limits<token_id>::max())
      throw value_error("mote: tokenizer: no id left for special token '" + text + "'");
    const auto id = static_cast<token_id>(vocab_size());
    add_special(text, id);
    return id;
  }

  // Number of embedding rows the ids need: one past the largest id, special tokens included.
  token_id vocab_size() const noexcept {
    return std::max(static_cast<token_id>(model_.id_limit()), special_limit_);
  }

  // Id of a vocabulary token (its byte-mapped form, e.g. "Ġthe") or of a special token.
  std::optional<token_id> token_to_id(std::string_view token) const {
    if (const auto it = special_ids_.find(std::string(token)); it != special_ids_.end()) return it->second;
    if (const token_id* id = model_.find(token)) return *id;
    return std::nullopt;
  }

  // The vocabulary form of an id (special tokens as written); value_error when it has no token.
  std::string id_to_token(token_id id) const {
    if (const auto it = special_text_.find(id); it != special_text_.end()) return it->second;
    if (!model_.has_id(id))
      throw value_error("mote: tokenizer: token id " + std::to_string(id) + " is not in the vocabulary of size " +
                        std::to_string(vocab_size()));
    return model_.token(id);
  }

  bool is_special(token_id id) const { return special_text_.count(id) != 0; }

  // Special tokens in registration order.
  std::vector<std::string> special_tokens() const {
    std::vector<std::string> out;
    for (const auto& s : order_) out.push_back(s);
    return out;
  }

  const bpe::Model& model() const noexcept { return model_; }

 private:
  void add_special(const std::string& text, token_id id) {
    if (special_ids_.emplace(text, id).second) {
      special_text_.emplace(id, text);
      order_.push_back(text);
      specials_.emplace_back(text, id);
      special_limit_ = std::max(special_limit_, static_cast<token_id>(id + 1));
    }
  }

  void encode_span(std::string_view text, std::size_t base, std::vector<token_id>& out) const {
    if (model_.options().symbols == bpe::Symbols::characters) {
      if (text.empty()) return;
      std::string normalized(space_mark);  // the prepended "▁" of every text segment
      for (std::size_t pos = 0; pos < text.size();) {
        std::uint32_t cp = 0;
        const std::size_t len = bpe::next_utf8(text, pos, cp);
        if (len == 0)
          throw value_error("mote: tokenizer: text is not valid UTF-8 at byte " + std::to_string(base + pos));
        if (cp == ' ')
          normalized += space_mark;
        else
          normalized.append(text.substr(pos, len));
        pos += len;
      }
      model_.encode_piece(normalized, 0, out);
      return;
    }
    for (const std::string_view piece : bpe::pretokenize_gpt2(text, base))
      model_.encode_piece(piece, base + static_cast<std::size_t>(piece.data() - text.data()), out);
  }

  static std::string read_text(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw io_error("mote: cannot open '" + path.string() + "'");
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) throw io_error("mote: cannot read '" + path.string() + "'");
    return data;
  }

  static std::vector<std::pair<std::string, token_id>> read_vocab(const json::Value& obj, const std::string& src) {
    std::vector<std::pair<std::string, token_id>> vocab;
    vocab.reserve(obj.size());
    for (const auto& [tok, v] : obj.as_object()) {
      if (!v.is_integer() || v.as_int64() < 0 || v.as_int64() > std::numeric_limits<token_id>::max())
        throw io_error("mote: " + src + ": token '" + tok + "': expected an id in 0.." +
                       std::to_string(std::numeric_limits<token_id>::max()) + ", got " + json::dump(v));
      vocab.emplace_back(tok, static_cast<token_id>(v.as_int64()));
    }
    return vocab;
  }

  // Settings that would change the encoding mote does not implement: reject rather than mis-encode.
  static void unsupported_if(const json::Value& obj, std::string_view key, const std::string& src, const std::string& at) {
    const json::Value* v = obj.find(key);
    if (v == nullptr || v->is_null() || (v->is_bool() && !v->as_bool()) || (v->is_string() && v->as_string().empty()) ||
        (v->is_number() && v->as_double() == 0.0))
      return;
    throw io_error("mote: " + src + ": " + (at.empty() ? "" : at + ".") + std::string(key) + " = " + json::dump(*v) +
                   " is not supported (byte-level BPE only)");
  }

  // Sequence[Prepend "▁", Replace " " -> "▁"]: the normalizer of Llama-style SentencePiece BPE.
  static bool is_sentencepiece_normalizer(const json::Value* n) {
    const auto is_str = [](const json::Value* v, std::string_view s) { return v != nullptr && v->is_string() && v->as_string() == s; };
    if (n == nullptr || !n->is_object() || !is_str(n->find("type"), "Sequence")) return false;
    const json::Value* list = n->find("normalizers");
    if (list == nullptr || !list->is_array() || list->size() != 2) return false;
    const json::Value& pre = list->at(std::size_t{0});
    const json::Value& rep = list->at(std::size_t{1});
    if (!pre.is_object() || !is_str(pre.find("type"), "Prepend") || !is_str(pre.find("prepend"), space_mark)) return false;
    if (!rep.is_object() || !is_str(rep.find("type"), "Replace") || !is_str(rep.find("content"), space_mark)) return false;
    const json::Value* pattern = rep.find("pattern");
    return pattern != nullptr && pattern->is_object() && is_str(pattern->find("String"), " ");
  }

  static void check_pre_tokenizer(const json::Value* pre, const std::string& src) {
    const auto fail = [&](const std::string& got) {
      throw io_error("mote: " + src + ": pre_tokenizer: expected GPT-2's ByteLevel pre-tokenizer "
                     "(add_prefix_space false, use_regex true), got " + got);
    };
    if (pre == nullptr || pre->is_null()) fail("none");
    if (!pre->is_object()) fail(json::dump(*pre));
    const json::Value* type = pre->find("type");
    if (type == nullptr || !type->is_string() || type->as_string() != "ByteLevel") fail(json::dump(*pre));
    if (const json::Value* a = pre->find("add_prefix_space"); a != nullptr && !(a->is_bool() && !a->as_bool()))
      fail(json::dump(*pre));
    if (const json::Value* r = pre->find("use_regex"); r != nullptr && !(r->is_bool() && r->as_bool())) fail(json::dump(*pre));
  }

  static constexpr std::string_view space_mark = "\xE2\x96\x81";  // U+2581 "▁", SentencePiece's space

  bpe::Model model_;
  std::unordered_map<std::string, token_id> special_ids_;
  std::unordered_map<token_id, std::string> special_text_;
  std::vector<std::string> order_;
  std::vector<std::pair<std::string, token_id>> specials_;
  token_id special_limit_ = 0;
};

}  // namespace mote::io
