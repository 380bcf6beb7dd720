// The values a Jinja template computes with, with Python's semantics where chat templates can see
// them (engine/jinja.h): truthiness, equality and order, arithmetic, str() and repr() text.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace kvserve::jinja {

// Any failure while parsing or rendering; the message starts with "line N: " where the line is known.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// raise_exception(message) called by the template: the message is the template author's words.
class RaisedError : public Error {
 public:
  using Error::Error;
};

class Value;
using List = std::vector<Value>;

// An insertion-ordered mapping with string keys (what JSON objects and template dict literals give).
struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  const Value* find(std::string_view key) const;
  void set(const std::string& key, Value value);
};

struct CallArgs;
using Function = std::function<Value(CallArgs&)>;

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kNamespace, kFunction };

  Value() = default;  // undefined
  // `message` is the error any use of it as an operand raises ("'x' is undefined").
  static Value undefined(std::string message);
  static Value none();
  Value(bool b);  // NOLINT: values convert from their C++ counterparts
  Value(int64_t i);
  Value(int i) : Value(static_cast<int64_t>(i)) {}
  Value(double d);
  Value(std::string s);
  Value(const char* s) : Value(std::string(s)) {}
  Value(List list, bool tuple = false);
  Value(Dict dict);
  // What select, map, unique, items and reverse return in jinja2: a generator (or iterator). It
  // iterates like a list but is always true, has no length or items, prints as an object address
  // and equals nothing else; templates convert it with |list. Operations that would tell it from
  // a list raise instead.
  static Value lazy(List list);
  static Value namespace_of(Dict dict);  // the mutable object namespace(...) makes
  // `closes_over_scopes`: a macro, which holds the scopes it was defined in (holds_reference()).
  static Value function(std::string name, Function f, bool closes_over_scopes = false);
  // JSON objects keep their order only from an ordered_json, as Python's json.loads keeps it.
  static Value from_json(const nlohmann::json& j);
  static Value from_json(const nlohmann::ordered_json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_tuple() const { return kind_ == Kind::kList && tuple_; }
  bool is_lazy() const { return kind_ == Kind::kList && lazy_; }
  bool is_sequence() const { return kind_ == Kind::kList && !lazy_; }  // a list or tuple proper
  // A generator runs once, as in jinja2: what it hands out (iterate, next_item) is gone from all
  // its copies. next_item gives the next item, or nullptr at the end.
  const Value* next_item() const;
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_namespace() const { return kind_ == Kind::kNamespace; }
  bool is_function() const { return kind_ == Kind::kFunction; }

  bool as_bool() const { return b_; }
  int64_t as_int() const;   // bool and int
  double as_float() const;  // bool, int and float
  const std::string& as_string() const { return text(); }
  const List& as_list() const { return *list_; }
  const Dict& as_dict() const { return *dict_; }
  Dict& namespace_dict() const { return *dict_; }  // namespaces are the one mutable value
  const std::string& function_name() const { return text(); }
  const Function& as_function() const { return *fn_; }
  const std::string& undefined_message() const { return text(); }
  // Lists and dicts inside lists and dicts, counted; bounded by kMaxNesting when built, so that
  // printing, comparing and freeing a value cannot exhaust the stack.
  int nesting() const { return nesting_; }
  // A namespace or a macro (which holds its scopes) is in the value: a namespace may not hold one,
  // so that no value can contain itself.
  bool holds_reference() const { return holds_reference_; }

  bool truthy() const;
  std::string str() const;   // Python str(): what {{ }} prints ("" for undefined)
  std::string repr() const;  // Python repr(): how values print inside lists and dicts
  std::string type_name() const;
  nlohmann::json to_json() const;  // throws Error for values JSON has no form for

  // Items a for loop visits: a list's elements, a dict's keys, a string's characters; undefined
  // gives none. Throws Error for anything else.
  List iterate() const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  bool tuple_ = false;
  bool lazy_ = false;
  bool holds_reference_ = false;
  uint16_t nesting_ = 0;
  void set_children_facts();
  int64_t i_ = 0;
  double d_ = 0;
  const std::string& text() const;
  // String value, undefined value's message, or function name. Shared: templates copy values
  // freely (loop items, list repetition), and a message's content should not be copied each time.
  std::shared_ptr<const std::string> s_;
  std::shared_ptr<const List> list_;
  std::shared_ptr<Dict> dict_;
  std::shared_ptr<const Function> fn_;
  std::shared_ptr<size_t> cursor_;  // a generator's next item, shared by its copies
};

// The longest string a template may build (by repetition, joining, printing a value, ...): a
// template that tries fails with Error instead of exhausting memory.
inline constexpr size_t kMaxStringBytes = size_t{64} << 20;
inline constexpr size_t kMaxListItems = size_t{1} << 20;
inline constexpr int kMaxNesting = 256;
void check_string_size(size_t bytes);  // throws Error above kMaxStringBytes

// Bytes of strings one render may create in all: a template that keeps building strings fails
// instead of growing memory until its time limit. Counted while a RenderBudget lives on the thread.
inline constexpr size_t kMaxRenderStringBytes = size_t{1} << 30;
class RenderBudget {
 public:
  RenderBudget();
  ~RenderBudget();
  RenderBudget(const RenderBudget&) = delete;
  RenderBudget& operator=(const RenderBudget&) = delete;

 private:
  size_t used_ = 0;
  size_t* outer_;
};
void check_list_size(size_t items);  // throws Error above kMaxListItems

// Arguments of a call: positional, then keyword, in the order written.
struct CallArgs {
  List positional;
  std::vector<std::pair<std::string, Value>> keyword;
  std::string callee;  // for messages

  // The argument at `index` or named `name`, else `fallback`; throws on a name given twice.
  Value get(size_t index, std::string_view name, Value fallback = Value()) const;
  // A keyword-only argument.
  Value named(std::string_view name, Value fallback = Value()) const;
  // Throws Error when more than `max_positional` positional or any keyword outside `names` is given.
  void expect(size_t max_positional, std::initializer_list<std::string_view> names) const;
};

// Python semantics; each throws Error naming the operand types where Python raises TypeError.
bool equals(const Value& a, const Value& b);
int compare(const Value& a, const Value& b);  // <0, 0, >0 for orderable pairs
Value add(const Value& a, const Value& b);
Value subtract(const Value& a, const Value& b);
Value multiply(const Value& a, const Value& b);
Value divide(const Value& a, const Value& b);
Value floor_divide(const Value& a, const Value& b);
Value modulo(const Value& a, const Value& b);
Value power(const Value& a, const Value& b);
Value negate(const Value& a);
bool contains(const Value& container, const Value& item);  // Python's `item in container`

// Python's repr() of a float: the shortest text that reads back, "1.0", "1e-05", "1e+16".
std::string float_repr(double d);
// Python's repr() of a str: single quotes unless only double quotes avoid escaping.
std::string string_repr(std::string_view s);

}  // namespace kvserve::jinja
