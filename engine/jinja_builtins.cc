// Jinja's tests (the subset chat templates use) and the globals Hugging Face adds: range,
// namespace, dict, raise_exception and strftime_now.
#include <cmath>
#include <ctime>
#include <unordered_map>

#include "engine/jinja_builtins.h"
#include "engine/jinja_text.h"

namespace kvserve::jinja {
namespace {

[[noreturn]] void fail(const std::string& what) {
  throw Error(what);
}

using TestFn = bool (*)(const Value&, CallArgs&);

// ---- tests ----

const Value& arg0(CallArgs& a) {
  if (a.positional.empty()) fail("test '" + a.callee + "' takes one argument");
  return a.positional[0];
}
bool t_defined(const Value& v, CallArgs&) {
  return !v.is_undefined();
}
bool t_undefined(const Value& v, CallArgs&) {
  return v.is_undefined();
}
bool t_none(const Value& v, CallArgs&) {
  return v.is_none();
}
bool t_boolean(const Value& v, CallArgs&) {
  return v.kind() == Value::Kind::kBool;
}
bool t_true(const Value& v, CallArgs&) {
  return v.kind() == Value::Kind::kBool && v.as_bool();
}
bool t_false(const Value& v, CallArgs&) {
  return v.kind() == Value::Kind::kBool && !v.as_bool();
}
bool t_integer(const Value& v, CallArgs&) {
  return v.kind() == Value::Kind::kInt;
}
bool t_float(const Value& v, CallArgs&) {
  return v.kind() == Value::Kind::kFloat;
}
bool t_number(const Value& v, CallArgs&) {
  return v.is_number();
}
bool t_string(const Value& v, CallArgs&) {
  return v.is_string();
}
bool t_mapping(const Value& v, CallArgs&) {
  return v.is_dict();
}
bool t_iterable(const Value& v, CallArgs&) {
  return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
}
bool t_sequence(const Value& v, CallArgs&) {
  return v.is_sequence() || v.is_dict() || v.is_string();
}
bool t_callable(const Value& v, CallArgs&) {
  return v.is_function();
}
bool t_odd(const Value& v, CallArgs&) {
  return modulo(v, Value(int64_t{2})).as_float() == 1;
}
bool t_even(const Value& v, CallArgs&) {
  return modulo(v, Value(int64_t{2})).as_float() == 0;
}
bool t_divisibleby(const Value& v, CallArgs& a) {
  return modulo(v, arg0(a)).as_float() == 0;
}
bool t_eq(const Value& v, CallArgs& a) {
  return equals(v, arg0(a));
}
bool t_ne(const Value& v, CallArgs& a) {
  return !equals(v, arg0(a));
}
bool t_lt(const Value& v, CallArgs& a) {
  return compare(v, arg0(a)) < 0;
}
bool t_le(const Value& v, CallArgs& a) {
  return compare(v, arg0(a)) <= 0;
}
bool t_gt(const Value& v, CallArgs& a) {
  return compare(v, arg0(a)) > 0;
}
bool t_ge(const Value& v, CallArgs& a) {
  return compare(v, arg0(a)) >= 0;
}
bool t_in(const Value& v, CallArgs& a) {
  return contains(arg0(a), v);
}
bool t_sameas(const Value& v, CallArgs& a) {
  const Value& o = arg0(a);
  if (v.is_none() || v.kind() == Value::Kind::kBool) return v.kind() == o.kind() && equals(v, o);
  return false;
}
// str.islower() / isupper(): at least one cased character, and none of the other case.
bool t_lower(const Value& v, CallArgs&) {
  return v.is_string() && text::upper(v.as_string()) != v.as_string() &&
         text::lower(v.as_string()) == v.as_string();
}
bool t_upper(const Value& v, CallArgs&) {
  return v.is_string() && text::lower(v.as_string()) != v.as_string() &&
         text::upper(v.as_string()) == v.as_string();
}

const std::unordered_map<std::string_view, TestFn>& tests() {
  static const std::unordered_map<std::string_view, TestFn> kTests = {
      {"defined", t_defined},
      {"undefined", t_undefined},
      {"none", t_none},
      {"boolean", t_boolean},
      {"true", t_true},
      {"false", t_false},
      {"integer", t_integer},
      {"float", t_float},
      {"number", t_number},
      {"string", t_string},
      {"mapping", t_mapping},
      {"iterable", t_iterable},
      {"sequence", t_sequence},
      {"callable", t_callable},
      {"odd", t_odd},
      {"even", t_even},
      {"divisibleby", t_divisibleby},
      {"eq", t_eq},
      {"equalto", t_eq},
      {"==", t_eq},
      {"ne", t_ne},
      {"!=", t_ne},
      {"lt", t_lt},
      {"lessthan", t_lt},
      {"<", t_lt},
      {"le", t_le},
      {"<=", t_le},
      {"gt", t_gt},
      {"greaterthan", t_gt},
      {">", t_gt},
      {"ge", t_ge},
      {">=", t_ge},
      {"in", t_in},
      {"sameas", t_sameas},
      {"lower", t_lower},
      {"upper", t_upper},
  };
  return kTests;
}

// ---- globals ----

Value g_range(CallArgs& a) {
  a.expect(3, {});
  const auto num = [&](size_t i) {
    if (a.positional[i].kind() != Value::Kind::kInt && a.positional[i].kind() != Value::Kind::kBool)
      fail("range() arguments must be integers, not " + a.positional[i].type_name());
    return a.positional[i].as_int();
  };
  if (a.positional.empty()) fail("range expected at least 1 argument, got 0");
  const int64_t start = a.positional.size() == 1 ? 0 : num(0);
  const int64_t stop = a.positional.size() == 1 ? num(0) : num(1);
  const int64_t step = a.positional.size() == 3 ? num(2) : 1;
  if (step == 0) fail("range() arg 3 must not be zero");
  // Counted in unsigned 64-bit arithmetic: stop - start may not fit in int64_t.
  const bool up = step > 0;
  const uint64_t span = up ? static_cast<uint64_t>(stop) - static_cast<uint64_t>(start)
                           : static_cast<uint64_t>(start) - static_cast<uint64_t>(stop);
  const uint64_t stride = up ? static_cast<uint64_t>(step) : uint64_t{0} - static_cast<uint64_t>(step);
  const uint64_t count = (up ? start < stop : start > stop) ? (span - 1) / stride + 1 : 0;
  // jinja2's sandbox refuses ranges over 100000 items (MAX_RANGE).
  if (count > 100000) fail("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
  List out;
  for (uint64_t k = 0; k < count; ++k)
    out.emplace_back(static_cast<int64_t>(static_cast<uint64_t>(start) + k * static_cast<uint64_t>(step)));
  return Value(std::move(out));
}

Dict keyword_dict(CallArgs& a) {
  Dict d;
  for (const Value& p : a.positional) {
    if (!p.is_dict()) fail(a.callee + "() positional argument must be a mapping");
    for (const auto& [k, v] : p.as_dict().items)
      d.set(k, v);
  }
  for (auto& [k, v] : a.keyword)
    d.set(k, v);
  return d;
}

}  // namespace

bool has_test(std::string_view name) {
  return tests().count(name) > 0;
}

bool apply_test(std::string_view name, const Value& input, CallArgs& args) {
  args.callee = std::string(name);
  return tests().at(name)(input, args);
}

Dict make_globals(const std::tm& now) {
  Dict g;
  g.set("range", Value::function("range", g_range));
  g.set("namespace", Value::function("namespace", [](CallArgs& a) {
          a.callee = "namespace";
          return Value::namespace_of(keyword_dict(a));
        }));
  g.set("dict", Value::function("dict", [](CallArgs& a) {
          a.callee = "dict";
          return Value(keyword_dict(a));
        }));
  g.set("raise_exception", Value::function("raise_exception", [](CallArgs& a) -> Value {
          throw RaisedError(a.positional.empty() ? std::string("raise_exception() called")
                                                 : a.positional[0].str());
        }));
  g.set("strftime_now", Value::function("strftime_now", [now](CallArgs& a) {
          a.callee = "strftime_now";
          a.expect(1, {});
          if (a.positional.empty() || !a.positional[0].is_string())
            fail("strftime_now() takes a format string");
          // Python formats a naive datetime: %Z and %z are empty. strftime's 0 is ambiguous (an
          // empty result or too small a buffer), so grow the buffer a few times before deciding.
          const std::string& given = a.positional[0].as_string();
          std::string format;
          for (size_t i = 0; i < given.size(); ++i) {
            if (given[i] == '%' && i + 1 < given.size()) {
              if (given[i + 1] != 'Z' && given[i + 1] != 'z') format += given.substr(i, 2);
              ++i;
            } else {
              format += given[i];
            }
          }
          if (format.empty()) return Value("");
          for (size_t size = 256; size <= (size_t{1} << 20); size *= 16) {
            std::string buf(size, '\0');
            const size_t n = std::strftime(buf.data(), buf.size(), format.c_str(), &now);
            if (n > 0) return Value(buf.substr(0, n));
          }
          return Value("");
        }));
  return g;
}

}  // namespace kvserve::jinja
