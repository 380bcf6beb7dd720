// Attribute and item access, slicing, the methods of str and dict, and HF's tojson.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>

#include "engine/jinja_builtins.h"
#include "engine/jinja_text.h"

namespace kvserve::jinja {
namespace {

[[noreturn]] void fail(const std::string& what) {
  throw Error(what);
}

const std::string* optional_string(const Value& v, const std::string& callee) {
  if (v.is_none() || v.is_undefined()) return nullptr;
  if (!v.is_string()) fail(callee + "() argument must be str or None, not " + v.type_name());
  return &v.as_string();
}

int64_t int_arg(const Value& v, const std::string& what) {
  if (v.kind() != Value::Kind::kInt && v.kind() != Value::Kind::kBool)
    fail(what + " must be an integer, not " + v.type_name());
  return v.as_int();
}

bool affix_matches(const std::string& s, const Value& affix, bool prefix, const std::string& callee) {
  const auto one = [&](const Value& a) {
    if (!a.is_string()) fail(callee + "() argument must be str or a tuple of str, not " + a.type_name());
    const std::string& x = a.as_string();
    if (x.size() > s.size()) return false;
    return prefix ? s.compare(0, x.size(), x) == 0 : s.compare(s.size() - x.size(), x.size(), x) == 0;
  };
  if (affix.is_list()) return std::any_of(affix.as_list().begin(), affix.as_list().end(), one);
  return one(affix);
}

List strings(const std::vector<std::string>& parts) {
  List out;
  out.reserve(parts.size());
  for (const std::string& p : parts)
    out.emplace_back(p);
  return out;
}

Value string_method(const std::string& s, const std::string& name, CallArgs& a) {
  a.callee = "str." + name;
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    a.expect(1, {});
    return Value(text::strip(s, optional_string(a.get(0, ""), a.callee), name != "rstrip", name != "lstrip"));
  }
  if (name == "split") {
    a.expect(2, {"sep", "maxsplit"});
    const Value sep = a.get(0, "sep");
    if (sep.is_string() && sep.as_string().empty()) fail("str.split(): empty separator");
    return Value(strings(
        text::split(s, optional_string(sep, a.callee), int_arg(a.get(1, "maxsplit", -1), "maxsplit"))));
  }
  if (name == "splitlines") {
    a.expect(0, {});
    return Value(strings(text::splitlines(s)));
  }
  if (name == "startswith" || name == "endswith") {
    a.expect(1, {});
    if (a.positional.empty()) fail(a.callee + "() takes one argument");
    return Value(affix_matches(s, a.positional[0], name == "startswith", a.callee));
  }
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    a.expect(0, {});
    if (name == "upper") return Value(text::upper(s));
    if (name == "lower") return Value(text::lower(s));
    if (name == "title") return Value(text::title_python(s));
    return Value(text::capitalize(s));
  }
  if (name == "replace") {
    a.expect(3, {});
    if (a.positional.size() < 2 || !a.positional[0].is_string() || !a.positional[1].is_string())
      fail("str.replace() takes two strings (and an optional count)");
    const int64_t count = a.positional.size() > 2 ? int_arg(a.positional[2], "count") : -1;
    return Value(text::replace(s, a.positional[0].as_string(), a.positional[1].as_string(), count));
  }
  if (name == "find" || name == "count") {
    a.expect(1, {});
    if (a.positional.empty() || !a.positional[0].is_string()) fail(a.callee + "() takes one string");
    return Value(name == "find" ? text::find(s, a.positional[0].as_string())
                                : text::count(s, a.positional[0].as_string()));
  }
  if (name == "join") {
    a.expect(1, {});
    if (a.positional.empty()) fail("str.join() takes one argument");
    std::string out;
    bool first = true;
    for (const Value& v : a.positional[0].iterate()) {
      if (!v.is_string()) fail("str.join(): expected str instance, " + v.type_name() + " found");
      if (!first) out += s;
      out += v.as_string();
      first = false;
    }
    return Value(std::move(out));
  }
  fail("'str' object has no method '" + name + "'");
}

Value dict_method(const Dict& d, const std::string& name, CallArgs& a) {
  a.callee = "dict." + name;
  if (name == "get") {
    a.expect(2, {});
    if (a.positional.empty()) fail("dict.get() takes a key");
    const Value& key = a.positional[0];
    const Value* v = key.is_string() ? d.find(key.as_string()) : nullptr;
    return v ? *v : (a.positional.size() > 1 ? a.positional[1] : Value::none());
  }
  a.expect(0, {});
  List out;
  for (const auto& [k, v] : d.items) {
    if (name == "items")
      out.emplace_back(List{Value(k), v}, /*tuple=*/true);
    else if (name == "keys")
      out.emplace_back(k);
    else
      out.push_back(v);
  }
  return Value(std::move(out));
}

bool is_string_method(const std::string& n) {
  static const char* const kNames[] = {"strip",      "lstrip",   "rstrip", "split", "splitlines",
                                       "startswith", "endswith", "upper",  "lower", "title",
                                       "capitalize", "replace",  "find",   "count", "join"};
  return std::any_of(std::begin(kNames), std::end(kNames), [&](const char* k) { return n == k; });
}

// Python's slice.indices(): start, stop and step clipped to a sequence of `n` items.
void slice_bounds(int64_t n, const Value& start, const Value& stop, const Value& step, int64_t* b, int64_t* e,
                  int64_t* s) {
  const auto given = [](const Value& v) { return !v.is_none() && !v.is_undefined(); };
  *s = given(step) ? int_arg(step, "slice step") : 1;
  if (*s == 0) fail("slice step cannot be zero");
  // A step past the sequence's length takes the first item only; clamping keeps i += step in range.
  *s = std::clamp<int64_t>(*s, -(n + 1), n + 1);
  const auto clip = [&](const Value& v, int64_t fallback) {
    if (!given(v)) return fallback;
    int64_t i = int_arg(v, "slice index");
    if (i < 0) i += n;
    if (*s > 0) return std::clamp<int64_t>(i, 0, n);
    return std::clamp<int64_t>(i, -1, n - 1);
  };
  *b = clip(start, *s > 0 ? 0 : n - 1);
  *e = clip(stop, *s > 0 ? n : -1);
}

void json_string(const std::string& s, bool ensure_ascii, std::string& out) {
  out += '"';
  for (char32_t c : text::decode(s)) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default: {
        char buf[16];
        if (c < 0x20 || (ensure_ascii && c >= 0x7F)) {
          if (c >= 0x10000) {
            const char32_t v = c - 0x10000;
            std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
          } else {
            std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          }
          out += buf;
        } else {
          out += text::encode(std::u32string(1, c));
        }
      }
    }
  }
  out += '"';
}

struct JsonStyle {
  bool ensure_ascii;
  bool sort_keys;
  std::optional<std::string> indent;  // unset: one line
  std::string item_separator;
  std::string key_separator;
};

void json_value(const Value& v, const JsonStyle& style, int level, std::string& out) {
  const auto newline = [&](int lvl) {
    if (!style.indent) return;
    out += '\n';
    for (int i = 0; i < lvl; ++i)
      out += *style.indent;
  };
  switch (v.kind()) {
    case Value::Kind::kNone:
      out += "null";
      return;
    case Value::Kind::kBool:
      out += v.as_bool() ? "true" : "false";
      return;
    case Value::Kind::kInt:
      out += std::to_string(v.as_int());
      return;
    case Value::Kind::kFloat: {
      const double d = v.as_float();
      out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : float_repr(d);
      return;
    }
    case Value::Kind::kString:
      json_string(v.as_string(), style.ensure_ascii, out);
      return;
    case Value::Kind::kList: {
      if (v.is_lazy()) fail("Object of type generator is not JSON serializable; convert it with |list");
      if (v.as_list().empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < v.as_list().size(); ++i) {
        if (i) out += style.item_separator;
        newline(level + 1);
        json_value(v.as_list()[i], style, level + 1, out);
        check_string_size(out.size());
      }
      newline(level);
      out += ']';
      return;
    }
    case Value::Kind::kDict: {
      if (v.as_dict().items.empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& item : v.as_dict().items)
        items.push_back(&item);
      if (style.sort_keys)
        std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
      out += '{';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += style.item_separator;
        newline(level + 1);
        json_string(items[i]->first, style.ensure_ascii, out);
        out += style.key_separator;
        json_value(items[i]->second, style, level + 1, out);
        check_string_size(out.size());
      }
      newline(level);
      out += '}';
      return;
    }
    default:
      if (v.is_undefined()) fail(v.undefined_message());
      fail("Object of type " + v.type_name() + " is not JSON serializable");
  }
}

}  // namespace

Value get_attribute(const Value& object, const std::string& name) {
  switch (object.kind()) {
    case Value::Kind::kUndefined:
      fail(object.undefined_message());
    case Value::Kind::kString:
      if (is_string_method(name)) {
        const std::string s = object.as_string();
        return Value::function("str." + name, [s, name](CallArgs& a) { return string_method(s, name, a); });
      }
      break;
    case Value::Kind::kDict:
      if (name == "items" || name == "keys" || name == "values" || name == "get") {
        const Value d = object;
        return Value::function("dict." + name,
                               [d, name](CallArgs& a) { return dict_method(d.as_dict(), name, a); });
      }
      if (const Value* v = object.as_dict().find(name)) return *v;
      break;
    case Value::Kind::kNamespace:
      if (const Value* v = object.namespace_dict().find(name)) return *v;
      break;
    default:
      break;
  }
  return Value::undefined("'" + object.type_name() + " object' has no attribute '" + name + "'");
}

Value get_item(const Value& object, const Value& key) {
  if (object.is_undefined()) fail(object.undefined_message());
  if ((object.is_sequence() || object.is_string()) &&
      (key.kind() == Value::Kind::kInt || key.kind() == Value::Kind::kBool)) {
    if (object.is_sequence()) {
      const List& l = object.as_list();
      int64_t i = key.as_int();
      if (i < 0) i += static_cast<int64_t>(l.size());
      if (i >= 0 && i < static_cast<int64_t>(l.size())) return l[static_cast<size_t>(i)];
    } else {
      const std::u32string u = text::decode(object.as_string());
      int64_t i = key.as_int();
      if (i < 0) i += static_cast<int64_t>(u.size());
      if (i >= 0 && i < static_cast<int64_t>(u.size()))
        return Value(text::encode(u.substr(static_cast<size_t>(i), 1)));
    }
    return Value::undefined(object.type_name() + " object has no element " + std::to_string(key.as_int()));
  }
  if ((object.is_dict() || object.is_namespace()) && key.is_string()) {
    const Dict& d = object.is_dict() ? object.as_dict() : object.namespace_dict();
    if (const Value* v = d.find(key.as_string())) return *v;
  }
  if (key.is_string()) return get_attribute(object, key.as_string());
  return Value::undefined("'" + object.type_name() + " object' has no attribute " + key.repr());
}

Value slice(const Value& object, const Value& start, const Value& stop, const Value& step) {
  if (object.is_undefined()) fail(object.undefined_message());
  const bool is_str = object.is_string();
  if (!is_str && !object.is_sequence()) fail("'" + object.type_name() + "' object is not subscriptable");
  const std::u32string u = is_str ? text::decode(object.as_string()) : std::u32string();
  const int64_t n = is_str ? static_cast<int64_t>(u.size()) : static_cast<int64_t>(object.as_list().size());
  int64_t b, e, s;
  slice_bounds(n, start, stop, step, &b, &e, &s);
  std::u32string out_str;
  List out_list;
  for (int64_t i = b; s > 0 ? i < e : i > e; i += s) {
    if (is_str)
      out_str += u[static_cast<size_t>(i)];
    else
      out_list.push_back(object.as_list()[static_cast<size_t>(i)]);
  }
  if (is_str) return Value(text::encode(out_str));
  return Value(std::move(out_list), object.is_tuple());
}

std::string to_json_text(const Value& value, bool ensure_ascii, const Value& indent, const Value& separators,
                         bool sort_keys) {
  JsonStyle style{ensure_ascii, sort_keys, std::nullopt, ", ", ": "};
  if (indent.kind() == Value::Kind::kInt) {
    style.indent = std::string(static_cast<size_t>(std::max<int64_t>(0, indent.as_int())), ' ');
  } else if (indent.is_string()) {
    style.indent = indent.as_string();
  } else if (!indent.is_none() && !indent.is_undefined()) {
    fail("tojson: indent must be an integer or a string");
  }
  if (style.indent) style.item_separator = ",";
  if (separators.is_list()) {
    const List& sep = separators.as_list();
    if (sep.size() != 2 || !sep[0].is_string() || !sep[1].is_string())
      fail("tojson: separators must be two strings");
    style.item_separator = sep[0].as_string();
    style.key_separator = sep[1].as_string();
  } else if (!separators.is_none() && !separators.is_undefined()) {
    fail("tojson: separators must be two strings");
  }
  std::string out;
  json_value(value, style, 0, out);
  return out;
}

}  // namespace kvserve::jinja
