// Jinja's filters as jinja2 3.1 defines them (the subset chat templates use). Each returns what
// jinja2 returns for the same input; the fixtures in tests/data/chat_templates were rendered by
// jinja2 itself. Where jinja2 returns a generator (map, select, ...), so does this (Value::lazy).
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "engine/jinja_builtins.h"
#include "engine/jinja_text.h"

namespace kvserve::jinja {
namespace {

[[noreturn]] void fail(const std::string& what) {
  throw Error(what);
}

using FilterFn = Value (*)(const Value&, CallArgs&);

bool given(const Value& v) {
  return !v.is_undefined() && !v.is_none();
}

// Jinja's attribute paths: "a.b.0" looks up a, then b, then item 0.
Value attribute_path(const Value& v, const std::string& path) {
  Value cur = v;
  size_t from = 0;
  while (true) {
    const size_t dot = path.find('.', from);
    const std::string part = path.substr(from, dot == std::string::npos ? std::string::npos : dot - from);
    const bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    int64_t index = 0;
    if (numeric && std::from_chars(part.data(), part.data() + part.size(), index).ec != std::errc())
      return Value::undefined("no item " + part);  // past 64 bits: no sequence is that long
    cur = numeric ? get_item(cur, Value(index)) : get_item(cur, Value(part));
    if (dot == std::string::npos) return cur;
    if (cur.is_undefined()) return cur;
    from = dot + 1;
  }
}

// Key of the sort/unique/min/max filters: strings compare case-insensitively unless asked.
Value sort_key(const Value& item, bool case_sensitive, const Value& attribute) {
  Value v = given(attribute) ? attribute_path(item, attribute.str()) : item;
  if (!case_sensitive && v.is_string()) return Value(text::lower(v.as_string()));
  return v;
}

int64_t length_of(const Value& v) {
  if (v.is_string()) return static_cast<int64_t>(text::length(v.as_string()));
  if (v.is_lazy()) fail("object of type 'generator' has no len(); convert it with |list first");
  if (v.is_list()) return static_cast<int64_t>(v.as_list().size());
  if (v.is_dict() || v.is_namespace())
    return static_cast<int64_t>((v.is_dict() ? v.as_dict() : v.namespace_dict()).items.size());
  if (v.is_undefined()) return 0;
  fail("object of type '" + v.type_name() + "' has no len()");
}

List as_items(const Value& v) {
  return v.iterate();
}

// ---- filters ----

Value f_abs(const Value& v, CallArgs& a) {
  a.expect(0, {});
  if (v.kind() == Value::Kind::kFloat) return Value(std::fabs(v.as_float()));
  if (v.is_number()) return v.as_int() < 0 ? negate(v) : Value(v.as_int());
  fail("bad operand type for abs(): '" + v.type_name() + "'");
}
Value f_capitalize(const Value& v, CallArgs& a) {
  a.expect(0, {});
  return Value(text::capitalize(v.str()));
}
Value f_length(const Value& v, CallArgs& a) {
  a.expect(0, {});
  return Value(length_of(v));
}
Value f_default(const Value& v, CallArgs& a) {
  a.expect(2, {"default_value", "boolean"});
  const Value fallback = a.get(0, "default_value", Value(""));
  const bool boolean = a.get(1, "boolean", Value(false)).truthy();
  if (v.is_undefined() || (boolean && !v.truthy())) return fallback;
  return v;
}
Value f_first(const Value& v, CallArgs& a) {
  a.expect(0, {});
  if (v.is_lazy()) {
    const Value* next = v.next_item();
    return next ? *next : Value::undefined("No first item, sequence was empty.");
  }
  const List items = as_items(v);
  return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
}
Value f_last(const Value& v, CallArgs& a) {
  a.expect(0, {});
  if (v.is_lazy()) fail("'generator' object is not reversible; convert it with |list before |last");
  const List items = as_items(v);
  return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
}
// Python's float(str): surrounding whitespace, a sign, digits with single underscores between
// them, an optional fraction and exponent, or inf / infinity / nan in any case; nothing else.
bool parse_python_float(std::string_view s, double* out) {
  std::string t = text::strip(s, nullptr, true, true);
  std::string lower = text::lower(t);
  const size_t sign = !lower.empty() && (lower[0] == '+' || lower[0] == '-') ? 1 : 0;
  const std::string word = lower.substr(sign);
  if (word == "inf" || word == "infinity" || word == "nan") {
    *out = std::strtod(lower.c_str(), nullptr);
    return true;
  }
  std::string clean = t.substr(0, sign);
  bool digits = false;
  bool exponent = false;
  for (size_t i = sign; i < t.size(); ++i) {
    const char c = t[i];
    const bool prev_digit = i > 0 && std::isdigit(static_cast<unsigned char>(t[i - 1]));
    const bool next_digit = i + 1 < t.size() && std::isdigit(static_cast<unsigned char>(t[i + 1]));
    if (std::isdigit(static_cast<unsigned char>(c))) {
      digits = true;
    } else if (c == '_') {
      if (!prev_digit || !next_digit) return false;
      continue;
    } else if (c == '.' && !exponent) {
    } else if ((c == 'e' || c == 'E') && digits && !exponent) {
      exponent = true;
      if (i + 1 < t.size() && (t[i + 1] == '+' || t[i + 1] == '-')) clean += t[i++];
    } else {
      return false;
    }
    clean += c;
  }
  if (!digits) return false;
  char* end = nullptr;
  *out = std::strtod(clean.c_str(), &end);
  return end == clean.c_str() + clean.size();
}

// Python's int(str, base) for base 0 and 2..36: a sign, the base's prefix where it has one (base 0
// reads it to choose, and then refuses leading zeros), digits with single underscores between.
// nullopt where Python raises ValueError; Error where the value is past 64 bits.
std::optional<int64_t> parse_python_int(std::string_view s, int base) {
  std::string t = text::lower(text::strip(s, nullptr, true, true));
  bool negative = false;
  size_t i = 0;
  if (i < t.size() && (t[i] == '+' || t[i] == '-')) negative = t[i++] == '-';
  const auto prefix = [&](char p) { return t.size() >= i + 2 && t[i] == '0' && t[i + 1] == p; };
  bool prefixed = false;
  const bool auto_base = base == 0;
  if (base == 0) {
    base = prefix('x') ? 16 : prefix('o') ? 8 : prefix('b') ? 2 : 10;
    prefixed = base != 10;
  } else if ((base == 16 && prefix('x')) || (base == 8 && prefix('o')) || (base == 2 && prefix('b'))) {
    prefixed = true;
  }
  if (prefixed) {
    i += 2;
    if (i < t.size() && t[i] == '_') ++i;  // Python allows one underscore after the prefix
  } else if (auto_base && i < t.size() && t[i] == '0' && t.find_first_not_of("0_", i) != std::string::npos) {
    return std::nullopt;  // base 0 reads "017" as neither octal nor decimal
  }
  constexpr uint64_t kLimit = uint64_t{1} << 63;  // |INT64_MIN|
  uint64_t value = 0;
  bool any = false;
  for (; i < t.size(); ++i) {
    const char c = t[i];
    if (c == '_') {
      if (!any || i + 1 >= t.size() || t[i + 1] == '_') return std::nullopt;
      continue;
    }
    const int d = std::isdigit(static_cast<unsigned char>(c)) ? c - '0'
                  : (c >= 'a' && c <= 'z')                    ? c - 'a' + 10
                                                              : 99;
    if (d >= base) return std::nullopt;
    if (__builtin_mul_overflow(value, static_cast<uint64_t>(base), &value) ||
        __builtin_add_overflow(value, static_cast<uint64_t>(d), &value) || value > kLimit)
      fail("int filter: the number is past 64 bits");
    any = true;
  }
  if (!any) return std::nullopt;
  if (!negative && value == kLimit) fail("int filter: the number is past 64 bits");
  return negative ? -static_cast<int64_t>(value - 1) - 1 : static_cast<int64_t>(value);
}

// int(float), refusing what Python would answer with an integer past 64 bits.
Value truncate_float(double d) {
  if (std::isinf(d)) fail("int filter: cannot convert float infinity to integer");
  if (std::fabs(d) >= 9223372036854775808.0) fail("int filter: the number is past 64 bits");
  return Value(static_cast<int64_t>(d));
}

Value f_float(const Value& v, CallArgs& a) {
  a.expect(1, {"default"});
  const Value fallback = a.get(0, "default", Value(0.0));
  if (v.is_undefined()) fail(v.undefined_message());
  if (v.is_number()) return Value(v.as_float());
  double d;
  if (v.is_string() && parse_python_float(v.as_string(), &d)) return Value(d);
  return fallback;
}

// jinja2: int(value, base) for a string, int(value) otherwise, then int(float(value)), then the default.
Value f_int(const Value& v, CallArgs& a) {
  a.expect(2, {"default", "base"});
  const Value fallback = a.get(0, "default", Value(int64_t{0}));
  const int64_t base = a.get(1, "base", Value(int64_t{10})).as_int();
  if (base != 0 && (base < 2 || base > 36)) fail("int filter: base must be 0 or in 2..36");
  if (v.is_undefined()) fail(v.undefined_message());
  if (v.kind() == Value::Kind::kFloat)
    return std::isnan(v.as_float()) ? fallback : truncate_float(v.as_float());
  if (v.is_number()) return Value(v.as_int());
  if (!v.is_string()) return fallback;
  if (const auto i = parse_python_int(v.as_string(), static_cast<int>(base))) return Value(*i);
  double d;
  if (parse_python_float(v.as_string(), &d)) return std::isnan(d) ? fallback : truncate_float(d);
  return fallback;
}

Value f_items(const Value& v, CallArgs& a) {
  a.expect(0, {});
  if (v.is_undefined()) return Value(List{});
  if (!v.is_dict()) fail("items filter: can only get item pairs from a mapping, not " + v.type_name());
  List out;
  for (const auto& [k, x] : v.as_dict().items)
    out.emplace_back(List{Value(k), x}, true);
  return Value::lazy(std::move(out));
}
Value f_join(const Value& v, CallArgs& a) {
  a.expect(2, {"d", "attribute"});
  const std::string sep = a.get(0, "d", Value("")).str();
  const Value attribute = a.get(1, "attribute");
  std::string out;
  bool first = true;
  for (const Value& item : as_items(v)) {
    if (!first) out += sep;
    out += (given(attribute) ? attribute_path(item, attribute.str()) : item).str();
    check_string_size(out.size());
    first = false;
  }
  return Value(std::move(out));
}
Value f_list(const Value& v, CallArgs& a) {
  a.expect(0, {});
  return Value(as_items(v));
}
Value f_lower(const Value& v, CallArgs& a) {
  a.expect(0, {});
  return Value(text::lower(v.str()));
}
Value f_upper(const Value& v, CallArgs& a) {
  a.expect(0, {});
  return Value(text::upper(v.str()));
}
Value f_title(const Value& v, CallArgs& a) {
  a.expect(0, {});
  return Value(text::title_jinja(v.str()));
}
Value f_trim(const Value& v, CallArgs& a) {
  a.expect(1, {"chars"});
  const Value chars = a.get(0, "chars");
  const std::string set = chars.str();
  return Value(text::strip(v.str(), given(chars) ? &set : nullptr, true, true));
}
Value f_string(const Value& v, CallArgs& a) {
  a.expect(0, {});
  return Value(v.str());
}
Value f_safe(const Value& v, CallArgs& a) {
  a.expect(0, {});
  return v;
}
Value f_replace(const Value& v, CallArgs& a) {
  a.expect(3, {"count"});
  if (a.positional.size() < 2) fail("replace filter takes the old and the new string");
  const Value count = a.get(2, "count");
  return Value(text::replace(v.str(), a.positional[0].str(), a.positional[1].str(),
                             given(count) ? count.as_int() : -1));
}
Value f_reverse(const Value& v, CallArgs& a) {
  a.expect(0, {});
  if (v.is_string()) {
    std::u32string u = text::decode(v.as_string());
    std::reverse(u.begin(), u.end());
    return Value(text::encode(u));
  }
  // jinja2 returns reversed(list), an iterator, for a sequence, and a reversed list for anything
  // that cannot be reversed in place (a generator).
  const bool was_lazy = v.is_lazy();
  List items = as_items(v);
  std::reverse(items.begin(), items.end());
  return was_lazy ? Value(std::move(items)) : Value::lazy(std::move(items));
}
Value f_round(const Value& v, CallArgs& a) {
  a.expect(2, {"precision", "method"});
  const int64_t precision = a.get(0, "precision", Value(int64_t{0})).as_int();
  const std::string method = a.get(1, "method", Value("common")).str();
  if (!v.is_number()) fail("round filter: " + v.type_name() + " is not a number");
  const double x = v.as_float();
  if (method == "common" && v.kind() != Value::Kind::kFloat)
    return Value(v.as_int());  // round(int) is an int
  if (method == "common") {
    // Python's round(x, n): correctly rounded, ties to even, which printf's exact decimal gives.
    if (precision < 0 || precision > 300) fail("round filter: precision out of range");
    char buf[400];
    std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(precision), x);
    return Value(std::strtod(buf, nullptr));
  }
  if (method != "floor" && method != "ceil") fail("round filter: method must be 'common', 'ceil' or 'floor'");
  const double scale = std::pow(10.0, static_cast<double>(precision));
  return Value((method == "floor" ? std::floor(x * scale) : std::ceil(x * scale)) / scale);
}
Value f_sort(const Value& v, CallArgs& a) {
  a.expect(3, {"reverse", "case_sensitive", "attribute"});
  const bool reverse = a.get(0, "reverse", Value(false)).truthy();
  const bool cs = a.get(1, "case_sensitive", Value(false)).truthy();
  const Value attribute = a.get(2, "attribute");
  List items = as_items(v);
  std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
    const int c = compare(sort_key(x, cs, attribute), sort_key(y, cs, attribute));
    return reverse ? c > 0 : c < 0;
  });
  return Value(std::move(items));
}
Value f_dictsort(const Value& v, CallArgs& a) {
  a.expect(3, {"case_sensitive", "by", "reverse"});
  const bool cs = a.get(0, "case_sensitive", Value(false)).truthy();
  const std::string by = a.get(1, "by", Value("key")).str();
  const bool reverse = a.get(2, "reverse", Value(false)).truthy();
  CallArgs none;
  List items = f_items(v, none).as_list();
  const size_t pos = by == "value" ? 1 : 0;
  std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
    const int c = compare(sort_key(x.as_list()[pos], cs, Value()), sort_key(y.as_list()[pos], cs, Value()));
    return reverse ? c > 0 : c < 0;
  });
  return Value(std::move(items));
}
// jinja2 keeps a Python set of the keys seen: equal numbers (1, 1.0, True) are one key, and a
// list or dict, being unhashable, is a TypeError. A string key per value gives the same, in O(n).
std::string hash_key(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kNone:
      return "N";
    case Value::Kind::kBool:
    case Value::Kind::kInt:
      return "n" + std::to_string(v.as_int());
    case Value::Kind::kFloat: {
      const double d = v.as_float();
      if (std::isfinite(d) && d == std::trunc(d) && std::fabs(d) < 9.2e18)
        return "n" + std::to_string(static_cast<int64_t>(d));
      return "f" + float_repr(d);
    }
    case Value::Kind::kString:
      return "s" + v.as_string();
    case Value::Kind::kList:
      if (v.is_tuple()) {
        std::string key = "t";
        for (const Value& item : v.as_list())
          key += hash_key(item) + '\0';
        return key;
      }
      [[fallthrough]];
    default:
      if (v.is_undefined()) fail(v.undefined_message());
      fail("unhashable type: '" + v.type_name() + "'");
  }
}

Value f_unique(const Value& v, CallArgs& a) {
  a.expect(2, {"case_sensitive", "attribute"});
  const bool cs = a.get(0, "case_sensitive", Value(false)).truthy();
  const Value attribute = a.get(1, "attribute");
  List out;
  std::unordered_set<std::string> seen;
  for (const Value& item : as_items(v)) {
    if (seen.insert(hash_key(sort_key(item, cs, attribute))).second) out.push_back(item);
  }
  return Value::lazy(std::move(out));
}

Value extreme(const Value& v, CallArgs& a, bool want_max) {
  a.expect(2, {"case_sensitive", "attribute"});
  const bool cs = a.get(0, "case_sensitive", Value(false)).truthy();
  const Value attribute = a.get(1, "attribute");
  const List items = as_items(v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  const Value* best = &items[0];
  for (const Value& item : items) {
    const int c = compare(sort_key(item, cs, attribute), sort_key(*best, cs, attribute));
    if (want_max ? c > 0 : c < 0) best = &item;
  }
  return *best;
}
Value f_max(const Value& v, CallArgs& a) {
  return extreme(v, a, true);
}
Value f_min(const Value& v, CallArgs& a) {
  return extreme(v, a, false);
}
Value f_sum(const Value& v, CallArgs& a) {
  a.expect(2, {"attribute", "start"});
  const Value attribute = a.get(0, "attribute");
  Value total = a.get(1, "start", Value(int64_t{0}));
  for (const Value& item : as_items(v))
    total = add(total, given(attribute) ? attribute_path(item, attribute.str()) : item);
  return total;
}
Value f_tojson(const Value& v, CallArgs& a) {
  a.expect(4, {"ensure_ascii", "indent", "separators", "sort_keys"});
  return Value(to_json_text(v, a.get(0, "ensure_ascii", Value(false)).truthy(), a.get(1, "indent"),
                            a.get(2, "separators"), a.get(3, "sort_keys", Value(false)).truthy()));
}
Value f_indent(const Value& v, CallArgs& a) {
  a.expect(3, {"width", "first", "blank"});
  const Value width = a.get(0, "width", Value(int64_t{4}));
  if (!width.is_string()) check_string_size(static_cast<size_t>(std::max<int64_t>(0, width.as_int())));
  const std::string indention =
      width.is_string() ? width.as_string()
                        : std::string(static_cast<size_t>(std::max<int64_t>(0, width.as_int())), ' ');
  const bool first = a.get(1, "first", Value(false)).truthy();
  const bool blank = a.get(2, "blank", Value(false)).truthy();
  // jinja2 appends a newline before splitting, so a trailing newline survives as an empty last line.
  const std::vector<std::string> lines = text::splitlines(v.str() + "\n");
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i > 0) out += "\n";
    if (i > 0 && (blank || !lines[i].empty())) out += indention;
    out += lines[i];
    check_string_size(out.size());
  }
  if (first && (blank || !out.empty() || lines.empty())) out = indention + out;
  return Value(std::move(out));
}
Value f_attr(const Value& v, CallArgs& a) {
  a.expect(1, {});
  if (a.positional.empty()) fail("attr filter takes a name");
  return get_attribute(v, a.positional[0].str());
}

// map(attribute='x', default=d) or map('filter', args...).
Value f_map(const Value& v, CallArgs& a) {
  List out;
  const Value attribute = a.named("attribute");
  if (given(attribute)) {
    const Value fallback = a.named("default");
    for (const Value& item : as_items(v)) {
      Value x = attribute_path(item, attribute.str());
      out.push_back(x.is_undefined() && !fallback.is_undefined() ? fallback : x);
    }
    return Value::lazy(std::move(out));
  }
  if (a.positional.empty()) fail("map filter takes a filter name or attribute=");
  const std::string name = a.positional[0].str();
  if (!has_filter(name)) fail("no filter named '" + name + "'");
  for (const Value& item : as_items(v)) {
    CallArgs rest{List(a.positional.begin() + 1, a.positional.end()), a.keyword, name};
    out.push_back(apply_filter(name, item, rest));
  }
  return Value::lazy(std::move(out));
}

// select / reject (test on the item) and selectattr / rejectattr (test on an attribute of it).
Value select_items(const Value& v, CallArgs& a, bool by_attribute, bool keep) {
  size_t next = 0;
  std::string attribute;
  if (by_attribute) {
    if (a.positional.empty()) fail(a.callee + " filter takes an attribute name");
    attribute = a.positional[next++].str();
  }
  std::string test;
  if (next < a.positional.size()) test = a.positional[next++].str();
  if (!test.empty() && !has_test(test)) fail("no test named '" + test + "'");
  List out;
  for (const Value& item : as_items(v)) {
    const Value x = by_attribute ? attribute_path(item, attribute) : item;
    bool pass;
    if (test.empty()) {
      pass = x.truthy();
    } else {
      CallArgs rest{List(a.positional.begin() + static_cast<long>(next), a.positional.end()), {}, test};
      pass = apply_test(test, x, rest);
    }
    if (pass == keep) out.push_back(item);
  }
  return Value::lazy(std::move(out));
}
Value f_select(const Value& v, CallArgs& a) {
  return select_items(v, a, false, true);
}
Value f_reject(const Value& v, CallArgs& a) {
  return select_items(v, a, false, false);
}
Value f_selectattr(const Value& v, CallArgs& a) {
  return select_items(v, a, true, true);
}
Value f_rejectattr(const Value& v, CallArgs& a) {
  return select_items(v, a, true, false);
}

const std::unordered_map<std::string_view, FilterFn>& filters() {
  static const std::unordered_map<std::string_view, FilterFn> kFilters = {
      {"abs", f_abs},
      {"attr", f_attr},
      {"capitalize", f_capitalize},
      {"count", f_length},
      {"d", f_default},
      {"default", f_default},
      {"dictsort", f_dictsort},
      {"first", f_first},
      {"float", f_float},
      {"indent", f_indent},
      {"int", f_int},
      {"items", f_items},
      {"join", f_join},
      {"last", f_last},
      {"length", f_length},
      {"list", f_list},
      {"lower", f_lower},
      {"map", f_map},
      {"max", f_max},
      {"min", f_min},
      {"reject", f_reject},
      {"rejectattr", f_rejectattr},
      {"replace", f_replace},
      {"reverse", f_reverse},
      {"round", f_round},
      {"safe", f_safe},
      {"select", f_select},
      {"selectattr", f_selectattr},
      {"sort", f_sort},
      {"string", f_string},
      {"sum", f_sum},
      {"title", f_title},
      {"tojson", f_tojson},
      {"trim", f_trim},
      {"unique", f_unique},
      {"upper", f_upper},
  };
  return kFilters;
}

}  // namespace

bool has_filter(std::string_view name) {
  return filters().count(name) > 0;
}

Value apply_filter(std::string_view name, const Value& input, CallArgs& args) {
  args.callee = std::string(name);
  return filters().at(name)(input, args);
}

}  // namespace kvserve::jinja
