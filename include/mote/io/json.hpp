#pragma once
// Strict RFC 8259 JSON: a Value tree that keeps object order and exact integers, a parser whose
// errors name the source, byte offset and what was expected, and a dump that round-trips.
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mote/core/error.hpp"
#include "mote/io/atomic_file.hpp"
#include "mote/io/utf8.hpp"

namespace mote::io::json {

enum class Type { null, boolean, number, string, array, object };

inline const char* type_name(Type t) noexcept {
  switch (t) {
    case Type::null: return "null";
    case Type::boolean: return "a boolean";
    case Type::number: return "a number";
    case Type::string: return "a string";
    case Type::array: return "an array";
    case Type::object: return "an object";
  }
  return "?";
}

// Nesting deeper than this is rejected, so hostile input cannot exhaust the stack.
inline constexpr int max_depth = 512;

class Value;
using Array = std::vector<Value>;
using Member = std::pair<std::string, Value>;
using Object = std::vector<Member>;

class Value {
 public:
  Value() = default;
  Value(std::nullptr_t) {}
  Value(bool b) : type_(Type::boolean), bool_(b) {}
  template <class I>
    requires(std::is_integral_v<I> && !std::is_same_v<I, bool>)
  Value(I i) : type_(Type::number), is_int_(true), int_(static_cast<std::int64_t>(i)), num_(static_cast<double>(i)) {
    if constexpr (std::is_unsigned_v<I> && sizeof(I) >= sizeof(std::int64_t)) {
      // A u64 above int64's range stays a number, but only as a double.
      if (i > static_cast<I>(INT64_MAX)) is_int_ = false;
    }
  }
  template <class F>
    requires std::is_floating_point_v<F>
  Value(F d) : type_(Type::number), num_(static_cast<double>(d)) {}
  Value(const char* s) : type_(Type::string), str_(s) {}
  Value(std::string s) : type_(Type::string), str_(std::move(s)) {}
  Value(std::string_view s) : type_(Type::string), str_(s) {}
  Value(Array a) : type_(Type::array), arr_(std::move(a)) {}
  Value(Object o) : type_(Type::object), obj_(std::move(o)) { rebuild_index(true); }
  // Arrays from plain vectors: std::vector<std::int64_t>, <double>, <std::string>, ...
  template <class T>
    requires(!std::is_same_v<T, Value> && !std::is_same_v<T, Member> && !std::is_same_v<T, bool> &&
             (std::is_arithmetic_v<T> || std::is_convertible_v<const T&, std::string>))
  Value(const std::vector<T>& v) : type_(Type::array) {
    arr_.reserve(v.size());
    for (const auto& x : v) arr_.emplace_back(x);
  }

  static Value array(std::initializer_list<Value> items = {}) { return Value(Array(items)); }
  // Ordered key-value list; a duplicate key throws value_error.
  static Value object(std::initializer_list<Member> members = {}) { return Value(Object(members)); }

  Type type() const noexcept { return type_; }
  bool is_null() const noexcept { return type_ == Type::null; }
  bool is_bool() const noexcept { return type_ == Type::boolean; }
  bool is_number() const noexcept { return type_ == Type::number; }
  // A number written without fraction or exponent that fits in int64.
  bool is_integer() const noexcept { return type_ == Type::number && is_int_; }
  bool is_string() const noexcept { return type_ == Type::string; }
  bool is_array() const noexcept { return type_ == Type::array; }
  bool is_object() const noexcept { return type_ == Type::object; }

  bool as_bool() const {
    expect(Type::boolean, "a boolean");
    return bool_;
  }
  // Integers, and numbers such as 1e4 or 3.0 whose value is an exact int64.
  std::int64_t as_int64() const {
    expect(Type::number, "an integer");
    if (is_int_) return int_;
    if (std::isfinite(num_) && std::trunc(num_) == num_ && num_ >= -9223372036854775808.0 &&
        num_ < 9223372036854775808.0)
      return static_cast<std::int64_t>(num_);
    fail("expected an integer, got the number " + format_double(num_));
  }
  double as_double() const {
    expect(Type::number, "a number");
    return num_;
  }
  const std::string& as_string() const {
    expect(Type::string, "a string");
    return str_;
  }
  const Array& as_array() const {
    expect(Type::array, "an array");
    return arr_;
  }
  const Object& as_object() const {
    expect(Type::object, "an object");
    return obj_;
  }

  // Element count of an array or object.
  std::size_t size() const {
    if (type_ == Type::array) return arr_.size();
    if (type_ == Type::object) return obj_.size();
    fail(std::string("expected an array or an object, got ") + type_name(type_));
  }
  const Value* find(std::string_view key) const {
    expect(Type::object, "an object");
    const std::size_t i = index_of(key);
    return i == npos ? nullptr : &obj_[i].second;
  }
  bool contains(std::string_view key) const { return find(key) != nullptr; }
  const Value& at(std::string_view key) const {
    if (const Value* v = find(key)) return *v;
    fail("missing key \"" + std::string(key) + "\"");
  }
  const Value& at(std::size_t index) const {
    expect(Type::array, "an array");
    if (index >= arr_.size())
      fail("index " + std::to_string(index) + " is out of range for an array of " + std::to_string(arr_.size()));
    return arr_[index];
  }
  const Value& operator[](std::string_view key) const { return at(key); }
  const Value& operator[](std::size_t index) const { return at(index); }

  // Building: set replaces an existing key in place or appends a new one.
  Value& set(std::string key, Value v) {
    expect(Type::object, "an object");
    const std::size_t i = index_of(key);
    if (i != npos) {
      obj_[i].second = std::move(v);
      return obj_[i].second;
    }
    obj_.emplace_back(std::move(key), std::move(v));
    if (index_) own_index().emplace(obj_.back().first, obj_.size() - 1);
    else if (obj_.size() > small_object) rebuild_index(false);
    return obj_.back().second;
  }
  Value& push_back(Value v) {
    expect(Type::array, "an array");
    arr_.push_back(std::move(v));
    return arr_.back();
  }

  // Where this value sits, e.g. `config.json: "layers"[2]."n_head"` (empty for values built in code).
  const std::string& path() const noexcept { return path_; }

  friend bool operator==(const Value& a, const Value& b) {
    if (a.type_ != b.type_) return false;
    switch (a.type_) {
      case Type::null: return true;
      case Type::boolean: return a.bool_ == b.bool_;
      case Type::number: return a.is_int_ && b.is_int_ ? a.int_ == b.int_ : a.num_ == b.num_;
      case Type::string: return a.str_ == b.str_;
      case Type::array: return a.arr_ == b.arr_;
      case Type::object: return a.obj_ == b.obj_;
    }
    return false;
  }

  // Shortest decimal form that parses back to the same double (std::to_chars guarantees this).
  static std::string format_double(double d) {
    char buf[64];
    const auto r = std::to_chars(buf, buf + sizeof buf, d);
    return std::string(buf, r.ptr);
  }

  // [[noreturn]] failure naming this value's path; used by readers layered on top (hf_config, safetensors).
  [[noreturn]] void fail(const std::string& what) const {
    throw io_error("mote: " + (path_.empty() ? std::string("json value") : path_) + ": " + what);
  }

 private:
  friend class Parser;
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);
  // Objects up to this size are searched linearly; larger ones get a hash index.
  static constexpr std::size_t small_object = 8;

  void expect(Type t, const char* what) const {
    if (type_ != t) fail(std::string("expected ") + what + ", got " + type_name(type_));
  }
  std::size_t index_of(std::string_view key) const {
    if (index_) {
      auto it = index_->find(std::string(key));
      return it == index_->end() ? npos : it->second;
    }
    for (std::size_t i = 0; i < obj_.size(); ++i)
      if (obj_[i].first == key) return i;
    return npos;
  }
  // Copies share the index until one of them adds a key.
  std::unordered_map<std::string, std::size_t>& own_index() {
    if (index_.use_count() > 1) index_ = std::make_shared<std::unordered_map<std::string, std::size_t>>(*index_);
    return *index_;
  }
  void rebuild_index(bool reject_duplicates) {
    index_.reset();
    if (obj_.size() <= small_object) {
      if (reject_duplicates)
        for (std::size_t i = 0; i < obj_.size(); ++i)
          for (std::size_t j = 0; j < i; ++j)
            if (obj_[i].first == obj_[j].first) duplicate(obj_[i].first);
      return;
    }
    auto map = std::make_shared<std::unordered_map<std::string, std::size_t>>();
    map->reserve(obj_.size());
    for (std::size_t i = 0; i < obj_.size(); ++i)
      if (!map->emplace(obj_[i].first, i).second && reject_duplicates) duplicate(obj_[i].first);
    index_ = std::move(map);
  }
  [[noreturn]] static void duplicate(const std::string& key) {
    throw value_error("mote: json object: duplicate key \"" + key + "\"");
  }

  Type type_ = Type::null;
  bool bool_ = false;
  bool is_int_ = false;
  std::int64_t int_ = 0;
  double num_ = 0;
  std::string str_;
  Array arr_;
  Object obj_;
  std::shared_ptr<std::unordered_map<std::string, std::size_t>> index_;
  std::string path_;
};

// Recursive-descent parser over a byte span; every read is bounds-checked against the text.
class Parser {
 public:
  Parser(std::string_view text, std::string_view source) : text_(text), source_(source) {}

  Value parse_document() {
    // A UTF-8 byte order mark is tolerated (RFC 8259 section 8.1 allows ignoring it).
    if (text_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;
    skip_ws();
    Value v = parse_value(0, source_);
    skip_ws();
    if (pos_ != text_.size()) fail("expected the end of the document");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& expected) const { fail_at(pos_, expected); }
  [[noreturn]] void fail_at(std::size_t at, const std::string& expected) const {
    std::size_t line = 1, col = 1;
    for (std::size_t i = 0; i < at && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    std::string got;
    if (at >= text_.size()) {
      got = "the end of the input";
    } else {
      const auto c = static_cast<unsigned char>(text_[at]);
      if (c >= 0x20 && c < 0x7f) got = std::string("'") + static_cast<char>(c) + "'";
      else {
        static const char hex[] = "0123456789abcdef";
        got = std::string("byte 0x") + hex[c >> 4] + hex[c & 15];
      }
    }
    throw io_error("mote: " + std::string(source_) + ": byte " + std::to_string(at) + " (line " +
                   std::to_string(line) + ", column " + std::to_string(col) + "): " + expected + ", got " + got);
  }
  bool at_end() const noexcept { return pos_ >= text_.size(); }
  char peek() const noexcept { return at_end() ? '\0' : text_[pos_]; }
  void skip_ws() {
    while (!at_end()) {
      const char c = text_[pos_];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') ++pos_;
      else break;
    }
  }
  void expect_literal(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) {
      std::size_t i = 0;
      while (pos_ + i < text_.size() && i < word.size() && text_[pos_ + i] == word[i]) ++i;
      fail_at(pos_ + i, "expected the literal '" + std::string(word) + "'");
    }
    pos_ += word.size();
  }

  Value parse_value(int depth, const std::string& path) {
    Value v;
    switch (peek()) {
      case '{': v = parse_object(depth, path); break;
      case '[': v = parse_array(depth, path); break;
      case '"':
        v.type_ = Type::string;
        v.str_ = parse_string();
        break;
      case 't':
        expect_literal("true");
        v = Value(true);
        break;
      case 'f':
        expect_literal("false");
        v = Value(false);
        break;
      case 'n': expect_literal("null"); break;
      default:
        if (peek() == '-' || (peek() >= '0' && peek() <= '9')) v = parse_number();
        else fail("expected a value (object, array, string, number, true, false or null)");
    }
    v.path_ = path;
    return v;
  }

  void enter(int depth) {
    if (depth + 1 > max_depth) fail("nesting deeper than " + std::to_string(max_depth) + " levels is not accepted; expected a value");
  }

  Value parse_object(int depth, const std::string& path) {
    enter(depth);
    ++pos_;  // '{'
    Value v;
    v.type_ = Type::object;
    std::unordered_map<std::string, std::size_t> seen;
    skip_ws();
    if (peek() == '}') {
      ++pos_;
      return v;
    }
    const std::string prefix = path == source_ ? path + ": " : path + ".";
    for (;;) {
      skip_ws();
      if (peek() != '"') fail("expected a string key");
      const std::size_t key_at = pos_;
      std::string key = parse_string();
      if (!seen.emplace(key, v.obj_.size()).second) fail_at(key_at, "duplicate key \"" + key + "\"; expected unique keys");
      skip_ws();
      if (peek() != ':') fail("expected ':' after the key \"" + key + "\"");
      ++pos_;
      skip_ws();
      std::string child = prefix + "\"" + key + "\"";
      v.obj_.emplace_back(std::move(key), parse_value(depth + 1, child));
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        break;
      }
      fail("expected ',' or '}' after an object member");
    }
    if (v.obj_.size() > Value::small_object)
      v.index_ = std::make_shared<std::unordered_map<std::string, std::size_t>>(std::move(seen));
    return v;
  }

  Value parse_array(int depth, const std::string& path) {
    enter(depth);
    ++pos_;  // '['
    Value v;
    v.type_ = Type::array;
    skip_ws();
    if (peek() == ']') {
      ++pos_;
      return v;
    }
    const std::string prefix = path == source_ ? path + ": " : path;
    for (;;) {
      skip_ws();
      v.arr_.push_back(parse_value(depth + 1, prefix + "[" + std::to_string(v.arr_.size()) + "]"));
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        break;
      }
      fail("expected ',' or ']' after an array element");
    }
    return v;
  }

  unsigned hex4() {
    unsigned u = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = peek();
      unsigned d;
      if (c >= '0' && c <= '9') d = static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') d = static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') d = static_cast<unsigned>(c - 'A' + 10);
      else fail("expected four hex digits after \\u");
      u = u * 16 + d;
      ++pos_;
    }
    return u;
  }
  // Length of the well-formed UTF-8 sequence at pos_ (Unicode table 3-7), or 0.
  std::size_t utf8_length() const {
    const auto b = [&](std::size_t i) -> unsigned {
      return pos_ + i < text_.size() ? static_cast<unsigned char>(text_[pos_ + i]) : 0u;
    };
    const unsigned c = b(0);
    const auto cont = [&](std::size_t i, unsigned lo = 0x80, unsigned hi = 0xBF) { return b(i) >= lo && b(i) <= hi; };
    if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
    if (c == 0xE0) return cont(1, 0xA0, 0xBF) && cont(2) ? 3 : 0;
    if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return cont(1) && cont(2) ? 3 : 0;
    if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;  // no UTF-16 surrogates
    if (c == 0xF0) return cont(1, 0x90, 0xBF) && cont(2) && cont(3) ? 4 : 0;
    if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
    if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
    return 0;
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    for (;;) {
      if (at_end()) fail("expected '\"' to close the string");
      const auto c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c == '\\') {
        ++pos_;
        const char e = peek();
        ++pos_;
        switch (e) {
          case '"': out += '"'; break;
          case '\\': out += '\\'; break;
          case '/': out += '/'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'n': out += '\n'; break;
          case 'r': out += '\r'; break;
          case 't': out += '\t'; break;
          case 'u': {
            const std::size_t esc_at = pos_ - 2;
            unsigned cp = hex4();
            if (cp >= 0xDC00 && cp <= 0xDFFF) fail_at(esc_at, "unpaired low surrogate; expected a high surrogate first");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
              if (text_.substr(pos_, 2) != "\\u") fail("expected a \\u low surrogate after the high surrogate");
              pos_ += 2;
              const unsigned lo = hex4();
              if (lo < 0xDC00 || lo > 0xDFFF) fail_at(pos_ - 6, "expected a low surrogate (\\uDC00-\\uDFFF)");
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            append_utf8(out, cp);
            break;
          }
          default: fail_at(pos_ - 1, "expected an escape character (\" \\ / b f n r t u)");
        }
        continue;
      }
      if (c < 0x20) fail("expected a string character (control characters must be escaped)");
      if (c < 0x80) {
        out += static_cast<char>(c);
        ++pos_;
        continue;
      }
      const std::size_t n = utf8_length();
      if (n == 0) fail("expected valid UTF-8 inside the string");
      out.append(text_.data() + pos_, n);
      pos_ += n;
    }
  }

  Value parse_number() {
    const std::size_t start = pos_;
    const auto digit = [&] { return !at_end() && text_[pos_] >= '0' && text_[pos_] <= '9'; };
    bool integral = true;
    if (peek() == '-') ++pos_;
    if (peek() == '0') {
      ++pos_;
      if (digit()) fail("expected no leading zeros in a number");
    } else if (digit()) {
      while (digit()) ++pos_;
    } else {
      fail("expected a digit");
    }
    const std::size_t int_end = pos_;
    if (peek() == '.') {
      integral = false;
      ++pos_;
      if (!digit()) fail("expected a digit after the decimal point");
      while (digit()) ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      integral = false;
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!digit()) fail("expected a digit in the exponent");
      while (digit()) ++pos_;
    }
    const char* first = text_.data() + start;
    const char* last = text_.data() + pos_;
    Value v;
    v.type_ = Type::number;
    if (integral) {
      std::int64_t i = 0;
      const auto r = std::from_chars(first, last, i);
      if (r.ec == std::errc() && r.ptr == last) {
        v.is_int_ = true;
        v.int_ = i;
        v.num_ = static_cast<double>(i);
        return v;
      }
    }
    double d = 0;
    const auto r = std::from_chars(first, last, d);
    if (r.ec == std::errc::result_out_of_range) {
      // Underflow reads as (signed) zero; overflow has no JSON-representable value.
      if (decimal_exponent(start, int_end) > 0) fail_at(start, "expected a number within the range of a double");
      d = text_[start] == '-' ? -0.0 : 0.0;
    } else if (r.ec != std::errc() || r.ptr != last) {
      fail_at(start, "expected a number");
    }
    v.num_ = d;
    return v;
  }
  // Rough base-10 magnitude of the literal in [start, pos_): positive means too large, not too small.
  long long decimal_exponent(std::size_t start, std::size_t int_end) const {
    std::size_t i = start + (text_[start] == '-' ? 1 : 0);
    long long mag = 0;
    bool nonzero = false;
    for (; i < int_end; ++i)
      if (nonzero || text_[i] != '0') {
        nonzero = true;
        ++mag;
      }
    i = int_end;
    if (i < pos_ && text_[i] == '.') {
      for (++i; i < pos_ && text_[i] >= '0' && text_[i] <= '9'; ++i) {
        if (nonzero) break;
        if (text_[i] != '0') nonzero = true;
        else --mag;
      }
    }
    while (i < pos_ && text_[i] != 'e' && text_[i] != 'E') ++i;
    if (i < pos_) {
      ++i;
      bool neg = false;
      if (text_[i] == '+' || text_[i] == '-') neg = text_[i++] == '-';
      long long e = 0;
      for (; i < pos_; ++i) e = std::min(e * 10 + (text_[i] - '0'), 100000000LL);
      mag += neg ? -e : e;
    }
    return mag;
  }

  std::string_view text_;
  std::string source_;
  std::size_t pos_ = 0;
};

// Parses a whole document; errors read `mote: <source>: byte N (line L, column C): expected ..., got ...`.
inline Value parse(std::string_view text, std::string_view source = "json") {
  return Parser(text, source).parse_document();
}

inline Value parse_file(const std::filesystem::path& path) { return parse(io::read_file(path), path.string()); }

namespace detail {

inline void dump_string(std::string& out, const std::string& s) {
  static const char hex[] = "0123456789abcdef";
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

inline void newline(std::string& out, int indent, int level) {
  if (indent < 0) return;
  out += '\n';
  out.append(static_cast<std::size_t>(indent) * static_cast<std::size_t>(level), ' ');
}

inline void dump_value(std::string& out, const Value& v, int indent, int level) {
  switch (v.type()) {
    case Type::null: out += "null"; break;
    case Type::boolean: out += v.as_bool() ? "true" : "false"; break;
    case Type::number:
      if (v.is_integer()) {
        out += std::to_string(v.as_int64());
      } else {
        const double d = v.as_double();
        if (!std::isfinite(d)) throw value_error("mote: json dump: " + (v.path().empty() ? std::string("a value") : v.path()) +
                                                 " is " + Value::format_double(d) + ", which JSON cannot represent");
        std::string s = Value::format_double(d);
        // Keeps a double a double when read back (1.0, not the integer 1).
        if (s.find_first_of(".eE") == std::string::npos) s += ".0";
        out += s;
      }
      break;
    case Type::string: dump_string(out, v.as_string()); break;
    case Type::array: {
      const auto& a = v.as_array();
      if (a.empty()) {
        out += "[]";
        break;
      }
      out += '[';
      for (std::size_t i = 0; i < a.size(); ++i) {
        if (i) out += ',';
        newline(out, indent, level + 1);
        dump_value(out, a[i], indent, level + 1);
      }
      newline(out, indent, level);
      out += ']';
      break;
    }
    case Type::object: {
      const auto& o = v.as_object();
      if (o.empty()) {
        out += "{}";
        break;
      }
      out += '{';
      for (std::size_t i = 0; i < o.size(); ++i) {
        if (i) out += ',';
        newline(out, indent, level + 1);
        dump_string(out, o[i].first);
        out += indent < 0 ? ":" : ": ";
        dump_value(out, o[i].second, indent, level + 1);
      }
      newline(out, indent, level);
      out += '}';
      break;
    }
  }
}

}  // namespace detail

// Compact with indent < 0; otherwise one member per line, indented by `indent` spaces per level.
inline std::string dump(const Value& v, int indent = -1) {
  std::string out;
  detail::dump_value(out, v, indent, 0);
  return out;
}

// Writes `value` (indented, newline-terminated) atomically: a temporary file beside it, then rename.
inline void write_file(const std::filesystem::path& path, const Value& value, int indent = 2) {
  const std::string text = dump(value, indent) + "\n";
  io::atomic_write(path, {text}, "'" + path.string() + "'");
}

}  // namespace mote::io::json
