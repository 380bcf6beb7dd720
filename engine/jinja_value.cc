#include "engine/jinja_value.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>

#include <unictype.h>
#include <nlohmann/json.hpp>

#include "engine/utf8.h"

namespace kvserve::jinja {
namespace {

// `depth` guards the recursion: JSON from a request may nest deeper than any value may.
template <typename Json>
Value value_from_json(const Json& j, int depth = 0) {
  // A few levels short of kMaxNesting: the request's JSON is wrapped in messages and variables.
  constexpr int kMaxJsonNesting = kMaxNesting - 8;
  if (depth > kMaxJsonNesting)
    throw Error("the JSON nests more than " + std::to_string(kMaxJsonNesting) + " deep");
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return Value::none();
    case nlohmann::json::value_t::boolean:
      return Value(j.template get<bool>());
    case nlohmann::json::value_t::number_integer:
      return Value(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      const auto u = j.template get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        throw Error("the JSON holds an integer past 64 bits, " + std::to_string(u));
      return Value(static_cast<int64_t>(u));
    }
    case nlohmann::json::value_t::number_float:
      return Value(j.template get<double>());
    case nlohmann::json::value_t::string:
      return Value(j.template get<std::string>());
    case nlohmann::json::value_t::array: {
      List list;
      list.reserve(j.size());
      for (const auto& e : j)
        list.push_back(value_from_json(e, depth + 1));
      return Value(std::move(list));
    }
    case nlohmann::json::value_t::object: {
      Dict dict;
      for (const auto& [k, v] : j.items())
        dict.items.emplace_back(k, value_from_json(v, depth + 1));
      return Value(std::move(dict));
    }
    default:
      throw Error("a JSON value of this type cannot be given to a template");
  }
}

}  // namespace

const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, v] : items)
    if (k == key) return &v;
  return nullptr;
}

void Dict::set(const std::string& key, Value value) {
  for (auto& [k, v] : items) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  items.emplace_back(key, std::move(value));
}

Value Value::undefined(std::string message) {
  Value v;
  v.s_ = std::make_shared<const std::string>(std::move(message));
  return v;
}
Value Value::none() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}
Value::Value(bool b) : kind_(Kind::kBool), b_(b) {}
Value::Value(int64_t i) : kind_(Kind::kInt), i_(i) {}
Value::Value(double d) : kind_(Kind::kFloat), d_(d) {}
namespace {
thread_local size_t* g_render_bytes = nullptr;  // the innermost RenderBudget's count
}  // namespace

RenderBudget::RenderBudget() : outer_(g_render_bytes) {
  g_render_bytes = &used_;
}
RenderBudget::~RenderBudget() {
  g_render_bytes = outer_;
}

Value::Value(std::string s) : kind_(Kind::kString) {
  check_string_size(s.size());
  if (g_render_bytes && (*g_render_bytes += s.size()) > kMaxRenderStringBytes)
    throw Error("the template built more than " + std::to_string(kMaxRenderStringBytes >> 20) +
                " MiB of strings");
  s_ = std::make_shared<const std::string>(std::move(s));
}
Value::Value(List list, bool tuple)
    : kind_(Kind::kList), tuple_(tuple), list_(std::make_shared<const List>(std::move(list))) {
  set_children_facts();
}
Value::Value(Dict dict) : kind_(Kind::kDict), dict_(std::make_shared<Dict>(std::move(dict))) {
  set_children_facts();
}

Value Value::lazy(List list) {
  Value v(std::move(list));
  v.lazy_ = true;
  v.cursor_ = std::make_shared<size_t>(0);
  return v;
}

const Value* Value::next_item() const {
  if (!lazy_ || *cursor_ >= list_->size()) return nullptr;
  return &(*list_)[(*cursor_)++];
}

Value Value::namespace_of(Dict dict) {
  Value v(std::move(dict));
  if (v.holds_reference_) throw Error("a namespace cannot hold a namespace or a macro");
  v.kind_ = Kind::kNamespace;
  v.holds_reference_ = true;
  return v;
}

void Value::set_children_facts() {
  int deepest = 0;
  const auto visit = [&](const Value& child) {
    deepest = std::max<int>(deepest, child.nesting_);
    holds_reference_ = holds_reference_ || child.holds_reference_;
  };
  if (list_) {
    for (const Value& v : *list_)
      visit(v);
  } else {
    for (const auto& item : dict_->items)
      visit(item.second);
  }
  if (deepest + 1 > kMaxNesting)
    throw Error("the template nests lists or dicts more than " + std::to_string(kMaxNesting) + " deep");
  nesting_ = static_cast<uint16_t>(deepest + 1);
}

Value Value::function(std::string name, Function f, bool closes_over_scopes) {
  Value v;
  v.kind_ = Kind::kFunction;
  v.s_ = std::make_shared<const std::string>(std::move(name));
  v.fn_ = std::make_shared<const Function>(std::move(f));
  v.holds_reference_ = closes_over_scopes;
  return v;
}

Value Value::from_json(const nlohmann::json& j) {
  return value_from_json(j);
}
Value Value::from_json(const nlohmann::ordered_json& j) {
  return value_from_json(j);
}

const std::string& Value::text() const {
  static const std::string kEmpty;
  return s_ ? *s_ : kEmpty;
}

void check_string_size(size_t bytes) {
  if (bytes > kMaxStringBytes)
    throw Error("the template builds a string of over " + std::to_string(kMaxStringBytes >> 20) + " MiB");
}

void check_list_size(size_t items) {
  if (items > kMaxListItems)
    throw Error("the template builds a list of over " + std::to_string(kMaxListItems) + " items");
}

int64_t Value::as_int() const {
  return kind_ == Kind::kBool ? (b_ ? 1 : 0) : i_;
}

double Value::as_float() const {
  return kind_ == Kind::kFloat ? d_ : static_cast<double>(as_int());
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return b_;
    case Kind::kInt:
      return i_ != 0;
    case Kind::kFloat:
      return d_ != 0.0;
    case Kind::kString:
      return !text().empty();
    case Kind::kList:
      if (lazy_) return true;  // a generator object is always true
      return !list_->empty();
    case Kind::kDict:
      return !dict_->items.empty();
    case Kind::kNamespace:
    case Kind::kFunction:
      return true;
  }
  return false;
}

std::string Value::type_name() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "Undefined";
    case Kind::kNone:
      return "NoneType";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kList:
      if (lazy_) return "generator";
      return tuple_ ? "tuple" : "list";
    case Kind::kDict:
      return "dict";
    case Kind::kNamespace:
      return "Namespace";
    case Kind::kFunction:
      return "function";
  }
  return "object";
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  // Shortest round-trip digits, then Python's layout: fixed for -4 < exponent + 1 <= 16.
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  const size_t e = sci.find('e');
  std::string mantissa = sci.substr(0, e);
  const int exp10 = std::stoi(sci.substr(e + 1));
  const bool negative = mantissa[0] == '-';
  if (negative) mantissa.erase(0, 1);
  std::string digits;
  for (char c : mantissa)
    if (c != '.') digits += c;
  const int decpt = exp10 + 1;
  std::string out = negative ? "-" : "";
  if (decpt <= -4 || decpt > 16) {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char ebuf[16];
    std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    return out + ebuf;
  }
  if (decpt <= 0) return out + "0." + std::string(static_cast<size_t>(-decpt), '0') + digits;
  if (static_cast<size_t>(decpt) >= digits.size())
    return out + digits + std::string(static_cast<size_t>(decpt) - digits.size(), '0') + ".0";
  return out + digits.substr(0, static_cast<size_t>(decpt)) + "." + digits.substr(static_cast<size_t>(decpt));
}

std::string string_repr(std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  out.reserve(s.size() + 2);
  char buf[16];
  for (size_t i = 0; i < s.size();) {
    const auto byte = static_cast<unsigned char>(s[i]);
    if (byte < 0x80) {
      ++i;
      if (byte == static_cast<unsigned char>(quote) || byte == '\\') {
        out += '\\';
        out += static_cast<char>(byte);
      } else if (byte == '\n') {
        out += "\\n";
      } else if (byte == '\r') {
        out += "\\r";
      } else if (byte == '\t') {
        out += "\\t";
      } else if (byte < 0x20 || byte == 0x7F) {
        std::snprintf(buf, sizeof buf, "\\x%02x", byte);
        out += buf;
      } else {
        out += static_cast<char>(byte);
      }
      continue;
    }
    const size_t len = utf8_char_len(s.substr(i));
    if (len == 0) {  // a byte that is not UTF-8: Python's surrogateescape shows it as \udcXX
      std::snprintf(buf, sizeof buf, "\\udc%02x", byte);
      out += buf;
      ++i;
      continue;
    }
    const char32_t c = utf8_decode(s.substr(i), len);
    if (uc_is_general_category(c, UC_CATEGORY_C) || uc_is_general_category(c, UC_CATEGORY_Z)) {
      // Python's str.isprintable() is false for categories C* and Z* (but the ASCII space).
      if (c < 0x100)
        std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(c));
      else if (c < 0x10000)
        std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
      else
        std::snprintf(buf, sizeof buf, "\\U%08x", static_cast<unsigned>(c));
      out += buf;
    } else {
      out.append(s.substr(i, len));
    }
    i += len;
  }
  out += quote;
  return out;
}

std::string Value::str() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "";
    case Kind::kString:
      return text();
    case Kind::kNamespace:
      return "<Namespace " + Value(*dict_).repr() + ">";
    default:
      return repr();
  }
}

std::string Value::repr() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "Undefined";
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return b_ ? "True" : "False";
    case Kind::kInt:
      return std::to_string(i_);
    case Kind::kFloat:
      return float_repr(d_);
    case Kind::kString:
      return string_repr(text());
    case Kind::kList: {
      if (lazy_)
        throw Error(
            "a generator (what select, map, unique, items or reverse return) cannot be printed; "
            "convert it with |list or |join");
      std::string out = tuple_ ? "(" : "[";
      for (size_t i = 0; i < list_->size(); ++i) {
        out += (i ? ", " : "") + (*list_)[i].repr();
        check_string_size(out.size());
      }
      if (tuple_ && list_->size() == 1) out += ",";
      return out + (tuple_ ? ")" : "]");
    }
    case Kind::kDict: {
      std::string out = "{";
      for (size_t i = 0; i < dict_->items.size(); ++i) {
        out += (i ? ", " : "") + string_repr(dict_->items[i].first) + ": " + dict_->items[i].second.repr();
        check_string_size(out.size());
      }
      return out + "}";
    }
    case Kind::kNamespace:
      return str();
    case Kind::kFunction:
      return "<function " + text() + ">";
  }
  return "";
}

nlohmann::json Value::to_json() const {
  switch (kind_) {
    case Kind::kNone:
      return nullptr;
    case Kind::kBool:
      return b_;
    case Kind::kInt:
      return i_;
    case Kind::kFloat:
      return d_;
    case Kind::kString:
      return text();
    case Kind::kList: {
      if (lazy_) throw Error("Object of type generator is not JSON serializable; convert it with |list");
      nlohmann::json out = nlohmann::json::array();
      for (const Value& v : *list_)
        out.push_back(v.to_json());
      return out;
    }
    case Kind::kDict: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& [k, v] : dict_->items)
        out[k] = v.to_json();
      return out;
    }
    default:
      throw Error("Object of type " + type_name() + " is not JSON serializable");
  }
}

List Value::iterate() const {
  switch (kind_) {
    case Kind::kUndefined:
      return {};
    case Kind::kList:
      if (lazy_) {
        List rest(list_->begin() + static_cast<std::ptrdiff_t>(*cursor_), list_->end());
        *cursor_ = list_->size();
        return rest;
      }
      return *list_;
    case Kind::kDict: {
      List keys;
      for (const auto& item : dict_->items)
        keys.emplace_back(item.first);
      return keys;
    }
    case Kind::kString: {
      List chars;
      const std::string& s = text();
      for (size_t i = 0; i < s.size();) {
        size_t n = 1;
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0xF0)
          n = 4;
        else if (c >= 0xE0)
          n = 3;
        else if (c >= 0xC0)
          n = 2;
        n = std::min(n, s.size() - i);
        chars.emplace_back(s.substr(i, n));
        if (chars.size() > kMaxListItems) check_list_size(chars.size());
        i += n;
      }
      return chars;
    }
    default:
      throw Error("'" + type_name() + "' object is not iterable");
  }
}

Value CallArgs::get(size_t index, std::string_view name, Value fallback) const {
  const Value* by_name = nullptr;
  for (const auto& [k, v] : keyword)
    if (k == name) by_name = &v;
  if (index < positional.size()) {
    if (by_name) throw Error(callee + "() got multiple values for argument '" + std::string(name) + "'");
    return positional[index];
  }
  return by_name ? *by_name : fallback;
}

Value CallArgs::named(std::string_view name, Value fallback) const {
  for (const auto& [k, v] : keyword)
    if (k == name) return v;
  return fallback;
}

void CallArgs::expect(size_t max_positional, std::initializer_list<std::string_view> names) const {
  if (positional.size() > max_positional)
    throw Error(callee + "() takes at most " + std::to_string(max_positional) + " positional argument(s), " +
                std::to_string(positional.size()) + " given");
  for (const auto& [k, v] : keyword) {
    bool known = false;
    for (std::string_view n : names)
      known = known || n == k;
    if (!known) throw Error(callee + "() got an unexpected keyword argument '" + k + "'");
  }
}

}  // namespace kvserve::jinja
