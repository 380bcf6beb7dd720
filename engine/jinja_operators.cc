// Python's operators on template values: ==, ordering, + - * / // % **, unary -, `in`.
#include <cmath>
#include <limits>

#include "engine/jinja_value.h"

namespace kvserve::jinja {
namespace {

[[noreturn]] void type_error(const std::string& what) {
  throw Error(what);
}

// Using an undefined value as an operand is an error in Jinja (printing or testing it is not).
void require_defined(const Value& v) {
  if (v.is_undefined()) type_error(v.undefined_message());
}

[[noreturn]] void unsupported(const char* op, const Value& a, const Value& b) {
  require_defined(a);
  require_defined(b);
  type_error(std::string("unsupported operand type(s) for ") + op + ": '" + a.type_name() + "' and '" +
             b.type_name() + "'");
}

bool is_integral(const Value& v) {
  return v.kind() == Value::Kind::kInt || v.kind() == Value::Kind::kBool;
}

// Python's int arithmetic is unbounded; a template overflowing 64 bits is an error rather than wrong.
template <typename Op>
Value checked(int64_t a, int64_t b, Op op) {
  int64_t r = 0;
  if (op(a, b, &r)) type_error("integer overflow");
  return Value(r);
}

// Python's floor division and modulo: the remainder takes the divisor's sign.
int64_t floor_div(int64_t a, int64_t b) {
  if (b == -1 && a == std::numeric_limits<int64_t>::min()) type_error("integer overflow");
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

Value repeat(const Value& seq, int64_t times) {
  const bool empty = seq.is_string() ? seq.as_string().empty() : seq.as_list().empty();
  if (times < 0 || empty) times = 0;
  if (seq.is_string()) {
    if (times > 0)
      check_string_size(seq.as_string().size() *
                        std::min<uint64_t>(static_cast<uint64_t>(times), kMaxStringBytes + 1));
    // By doubling: 'x' * 60000000 is a few large copies, not sixty million appends.
    const std::string& unit = seq.as_string();
    const size_t total = unit.size() * static_cast<size_t>(times);
    std::string out;
    out.reserve(total);
    out += unit;
    while (out.size() < total)
      out.append(out, 0, std::min(out.size(), total - out.size()));
    if (times == 0) out.clear();
    return Value(std::move(out));
  }
  if (times > 0)
    check_list_size(seq.as_list().size() *
                    std::min<uint64_t>(static_cast<uint64_t>(times), kMaxListItems + 1));
  List out;
  for (int64_t i = 0; i < times; ++i)
    out.insert(out.end(), seq.as_list().begin(), seq.as_list().end());
  return Value(std::move(out), seq.is_tuple());
}

}  // namespace

bool equals(const Value& a, const Value& b) {
  // A generator equals only itself (and a copy of it, which is the same object).
  if (a.is_lazy() || b.is_lazy()) return a.is_lazy() && b.is_lazy() && &a.as_list() == &b.as_list();
  if (a.is_number() && b.is_number()) {
    if (is_integral(a) && is_integral(b)) return a.as_int() == b.as_int();
    return a.as_float() == b.as_float();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return true;
    case Value::Kind::kString:
      return a.as_string() == b.as_string();
    case Value::Kind::kList: {
      if (a.is_tuple() != b.is_tuple() || a.as_list().size() != b.as_list().size()) return false;
      for (size_t i = 0; i < a.as_list().size(); ++i)
        if (!equals(a.as_list()[i], b.as_list()[i])) return false;
      return true;
    }
    case Value::Kind::kDict: {
      if (a.as_dict().items.size() != b.as_dict().items.size()) return false;
      for (const auto& [k, v] : a.as_dict().items) {
        const Value* other = b.as_dict().find(k);
        if (!other || !equals(v, *other)) return false;
      }
      return true;
    }
    case Value::Kind::kNamespace:
      return &a.namespace_dict() == &b.namespace_dict();
    default:
      return false;
  }
}

int compare(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (is_integral(a) && is_integral(b)) return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int();
    const double x = a.as_float();
    const double y = b.as_float();
    return x < y ? -1 : x > y;
  }
  if (a.is_string() && b.is_string()) {
    const int c = a.as_string().compare(b.as_string());  // UTF-8 byte order is code point order
    return c < 0 ? -1 : c > 0;
  }
  if (a.is_sequence() && b.is_sequence() && a.is_tuple() == b.is_tuple()) {
    const List& x = a.as_list();
    const List& y = b.as_list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i)
      if (!equals(x[i], y[i])) return compare(x[i], y[i]);
    return x.size() < y.size() ? -1 : x.size() > y.size();
  }
  require_defined(a);
  require_defined(b);
  type_error("'<' not supported between instances of '" + a.type_name() + "' and '" + b.type_name() + "'");
}

Value add(const Value& a, const Value& b) {
  if (is_integral(a) && is_integral(b)) {
    return checked(a.as_int(), b.as_int(),
                   [](int64_t x, int64_t y, int64_t* r) { return __builtin_add_overflow(x, y, r); });
  }
  if (a.is_number() && b.is_number()) return Value(a.as_float() + b.as_float());
  if (a.is_string() && b.is_string()) return Value(a.as_string() + b.as_string());
  if (a.is_sequence() && b.is_sequence() && a.is_tuple() == b.is_tuple()) {
    check_list_size(a.as_list().size() + b.as_list().size());
    List out = a.as_list();
    out.insert(out.end(), b.as_list().begin(), b.as_list().end());
    return Value(std::move(out), a.is_tuple());
  }
  unsupported("+", a, b);
}

Value subtract(const Value& a, const Value& b) {
  if (is_integral(a) && is_integral(b)) {
    return checked(a.as_int(), b.as_int(),
                   [](int64_t x, int64_t y, int64_t* r) { return __builtin_sub_overflow(x, y, r); });
  }
  if (a.is_number() && b.is_number()) return Value(a.as_float() - b.as_float());
  unsupported("-", a, b);
}

Value multiply(const Value& a, const Value& b) {
  if (is_integral(a) && is_integral(b)) {
    return checked(a.as_int(), b.as_int(),
                   [](int64_t x, int64_t y, int64_t* r) { return __builtin_mul_overflow(x, y, r); });
  }
  if (a.is_number() && b.is_number()) return Value(a.as_float() * b.as_float());
  if ((a.is_string() || a.is_sequence()) && is_integral(b)) return repeat(a, b.as_int());
  if (is_integral(a) && (b.is_string() || b.is_sequence())) return repeat(b, a.as_int());
  unsupported("*", a, b);
}

Value divide(const Value& a, const Value& b) {
  if (!a.is_number() || !b.is_number()) unsupported("/", a, b);
  if (b.as_float() == 0.0) type_error("division by zero");
  return Value(a.as_float() / b.as_float());
}

Value floor_divide(const Value& a, const Value& b) {
  if (!a.is_number() || !b.is_number()) unsupported("//", a, b);
  if (b.as_float() == 0.0) type_error("integer division or modulo by zero");
  if (is_integral(a) && is_integral(b)) return Value(floor_div(a.as_int(), b.as_int()));
  // CPython's float floor division, from fmod, so that 2.5 // 0.1 is 24.0 as 2.5 % 0.1 implies.
  const double x = a.as_float();
  const double y = b.as_float();
  const double mod = std::fmod(x, y);
  double div = (x - mod) / y;
  if (mod != 0.0 && ((y < 0) != (mod < 0))) div -= 1.0;
  if (div == 0.0) return Value(std::copysign(0.0, x / y));
  double floored = std::floor(div);
  if (div - floored > 0.5) floored += 1.0;
  return Value(floored);
}

Value modulo(const Value& a, const Value& b) {
  if (!a.is_number() || !b.is_number()) unsupported("%", a, b);
  if (b.as_float() == 0.0) type_error("integer division or modulo by zero");
  if (is_integral(a) && is_integral(b)) {
    if (b.as_int() == -1) return Value(int64_t{0});
    return Value(a.as_int() - floor_div(a.as_int(), b.as_int()) * b.as_int());
  }
  const double x = a.as_float();
  const double y = b.as_float();
  double r = std::fmod(x, y);
  if (r != 0 && ((r < 0) != (y < 0))) r += y;
  if (r == 0) r = std::copysign(0.0, y);  // Python: a zero remainder takes the divisor's sign
  return Value(r);
}

Value power(const Value& a, const Value& b) {
  if (!a.is_number() || !b.is_number()) unsupported("** or pow()", a, b);
  if (is_integral(a) && is_integral(b) && b.as_int() >= 0) {
    // By squaring: a huge exponent of 0, 1 or -1 must not loop for ever.
    int64_t result = 1;
    int64_t base = a.as_int();
    for (int64_t e = b.as_int(); e > 0; e >>= 1) {
      if ((e & 1) && __builtin_mul_overflow(result, base, &result)) type_error("integer overflow");
      if (e > 1 && __builtin_mul_overflow(base, base, &base)) type_error("integer overflow");
    }
    return Value(result);
  }
  if (a.as_float() == 0.0 && b.as_float() < 0) type_error("0.0 cannot be raised to a negative power");
  return Value(std::pow(a.as_float(), b.as_float()));
}

Value negate(const Value& a) {
  if (is_integral(a)) {
    if (a.as_int() == std::numeric_limits<int64_t>::min()) type_error("integer overflow");
    return Value(-a.as_int());
  }
  if (a.kind() == Value::Kind::kFloat) return Value(-a.as_float());
  require_defined(a);
  type_error("bad operand type for unary -: '" + a.type_name() + "'");
}

bool contains(const Value& container, const Value& item) {
  if (container.is_string()) {
    if (!item.is_string())
      type_error("'in <string>' requires string as left operand, not " + item.type_name());
    return container.as_string().find(item.as_string()) != std::string::npos;
  }
  if (container.is_lazy()) {  // a generator stops after the match, as Python's `in` does
    while (const Value* v = container.next_item())
      if (equals(*v, item)) return true;
    return false;
  }
  if (container.is_list()) {
    for (const Value& v : container.as_list())
      if (equals(v, item)) return true;
    return false;
  }
  if (container.is_dict()) return item.is_string() && container.as_dict().find(item.as_string()) != nullptr;
  require_defined(container);
  type_error("argument of type '" + container.type_name() + "' is not iterable");
}

}  // namespace kvserve::jinja
