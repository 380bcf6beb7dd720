// Evaluation of the Jinja AST with jinja2's scoping: a for loop's body is a new scope per item (a
// `set` inside does not outlive the iteration, which is why templates carry state in a namespace),
// `if` is not a scope, a macro sees its parameters over the template's top-level names only.
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "engine/jinja.h"
#include "engine/jinja_ast.h"
#include "engine/jinja_builtins.h"

namespace kvserve::jinja {

class Context {
 public:
  using Scope = std::unordered_map<std::string, Value>;
  using ScopePtr = std::shared_ptr<Scope>;
  using Closure = std::vector<ScopePtr>;

  Context(const RenderOptions& options, const Value& variables)
      : options(options),
        stack_base_(reinterpret_cast<uintptr_t>(__builtin_frame_address(0))),
        deadline_(std::chrono::steady_clock::now() + options.time_limit),
        globals_(make_globals(options.now)),
        variables_(variables) {
    scopes_.push_back(std::make_shared<Scope>());
  }

  Value lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      const auto found = (*it)->find(name);
      if (found != (*it)->end()) return found->second;
    }
    if (const Value* v = variables_.as_dict().find(name)) return *v;
    if (const Value* v = globals_.find(name)) return *v;
    return Value::undefined("'" + name + "' is undefined");
  }
  void assign(const std::string& name, Value v) { (*scopes_.back())[name] = std::move(v); }

  // A new innermost scope for as long as it lives. Emptied when it ends: a macro defined in it,
  // whose closure holds the scope that holds the macro, is freed then.
  class ScopeGuard {
   public:
    explicit ScopeGuard(Context& ctx) : ctx_(ctx) { ctx_.scopes_.push_back(std::make_shared<Scope>()); }
    ~ScopeGuard() {
      ctx_.scopes_.back()->clear();
      ctx_.scopes_.pop_back();
    }
    ScopeGuard(const ScopeGuard&) = delete;
    ScopeGuard& operator=(const ScopeGuard&) = delete;

   private:
    Context& ctx_;
  };

  // The scopes a macro defined now closes over, shared, not copied: as in jinja2 it sees later
  // assignments there and itself (the top-level scope is always visible anyway).
  Closure enclosing_scopes() const { return Closure(scopes_.begin() + 1, scopes_.end()); }

  // For a macro's body: the top-level scope, the scopes the macro closed over, and a new one.
  class MacroFrame {
   public:
    MacroFrame(Context& ctx, const Closure& closure) : ctx_(ctx) {
      if (ctx_.depth_ + 1 > ctx_.options.max_call_depth)
        throw Error("macro calls nest deeper than " + std::to_string(ctx_.options.max_call_depth));
      ctx_.check_stack();
      ++ctx_.depth_;
      saved_.assign(ctx_.scopes_.begin() + 1, ctx_.scopes_.end());
      ctx_.scopes_.resize(1);
      ctx_.scopes_.insert(ctx_.scopes_.end(), closure.begin(), closure.end());
      ctx_.scopes_.push_back(std::make_shared<Scope>());
    }
    ~MacroFrame() {
      ctx_.scopes_.back()->clear();
      ctx_.scopes_.resize(1);
      ctx_.scopes_.insert(ctx_.scopes_.end(), saved_.begin(), saved_.end());
      --ctx_.depth_;
    }
    MacroFrame(const MacroFrame&) = delete;
    MacroFrame& operator=(const MacroFrame&) = delete;

   private:
    Context& ctx_;
    Closure saved_;
  };

  // Called for every statement and loop item.
  void tick() const {
    if (std::chrono::steady_clock::now() > deadline_)
      throw Error("the template ran for longer than " + std::to_string(options.time_limit.count()) + " ms");
  }

  // Recursion a template controls (macros calling macros inside nested blocks around deep
  // expressions) multiplies each bound; what bounds the product is the stack it takes: past
  // kMaxRenderStack bytes the render fails instead of overflowing the thread's stack.
  void check_stack() const {
    static constexpr uintptr_t kMaxRenderStack = uintptr_t{1} << 20;
    const auto here = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
    const uintptr_t used = stack_base_ > here ? stack_base_ - here : here - stack_base_;
    if (used > kMaxRenderStack)
      throw Error("the template nests too deeply (macros calling macros inside nested blocks)");
  }

  void render_body(const Body& body, std::string& out) {
    check_stack();
    for (const StmtPtr& s : body) {
      tick();
      line = s->line;
      s->render(*this, out);
      if (out.size() > options.max_output_bytes)
        throw Error("the template's output exceeds " + std::to_string(options.max_output_bytes) + " bytes");
      if (control != LoopControl::kNone) return;
    }
  }

  const RenderOptions& options;
  LoopControl control = LoopControl::kNone;
  int line = 0;  // of the statement being rendered, for error messages

 private:
  RenderBudget budget_;
  uintptr_t stack_base_;
  std::chrono::steady_clock::time_point deadline_;
  Dict globals_;
  const Value& variables_;
  std::vector<ScopePtr> scopes_;
  int depth_ = 0;
};

namespace {

CallArgs eval_args(Context& ctx, const ArgExprs& args) {
  CallArgs out;
  for (const ExprPtr& e : args.positional)
    out.positional.push_back(e->eval(ctx));
  for (const auto& [name, e] : args.keyword)
    out.keyword.emplace_back(name, e->eval(ctx));
  return out;
}

void bind_targets(Context& ctx, const std::vector<std::string>& targets, const Value& v) {
  if (targets.size() == 1) {
    ctx.assign(targets[0], v);
    return;
  }
  const List items = v.iterate();
  if (items.size() != targets.size())
    throw Error(std::string(items.size() > targets.size() ? "too many" : "not enough") +
                " values to unpack (expected " + std::to_string(targets.size()) + ", got " +
                std::to_string(items.size()) + ")");
  for (size_t i = 0; i < targets.size(); ++i)
    ctx.assign(targets[i], items[i]);
}

bool compare_op(BinaryOp op, const Value& a, const Value& b) {
  switch (op) {
    case BinaryOp::kEq:
      return equals(a, b);
    case BinaryOp::kNe:
      return !equals(a, b);
    case BinaryOp::kLt:
      return compare(a, b) < 0;
    case BinaryOp::kLe:
      return compare(a, b) <= 0;
    case BinaryOp::kGt:
      return compare(a, b) > 0;
    case BinaryOp::kGe:
      return compare(a, b) >= 0;
    case BinaryOp::kIn:
      return contains(b, a);
    case BinaryOp::kNotIn:
      return !contains(b, a);
    default:
      throw Error("not a comparison");
  }
}

}  // namespace

// ---- expressions ----

Value LiteralExpr::eval(Context&) const {
  return value;
}

Value NameExpr::eval(Context& ctx) const {
  return ctx.lookup(name);
}

Value ListExpr::eval(Context& ctx) const {
  List out;
  out.reserve(items.size());
  for (const ExprPtr& e : items)
    out.push_back(e->eval(ctx));
  return Value(std::move(out), tuple);
}

Value DictExpr::eval(Context& ctx) const {
  Dict d;
  for (const auto& [k, v] : items) {
    const Value key = k->eval(ctx);
    if (!key.is_string()) throw Error("dict keys must be strings in chat templates, not " + key.type_name());
    d.set(key.as_string(), v->eval(ctx));
  }
  return Value(std::move(d));
}

Value AttrExpr::eval(Context& ctx) const {
  return get_attribute(object->eval(ctx), name);
}

Value ItemExpr::eval(Context& ctx) const {
  const Value obj = object->eval(ctx);
  return get_item(obj, key->eval(ctx));
}

Value SliceExpr::eval(Context& ctx) const {
  const Value obj = object->eval(ctx);
  const auto opt = [&](const ExprPtr& e) { return e ? e->eval(ctx) : Value::none(); };
  return slice(obj, opt(start), opt(stop), opt(step));
}

Value CallExpr::eval(Context& ctx) const {
  const Value fn = callee->eval(ctx);
  CallArgs args = eval_args(ctx, this->args);
  if (fn.is_undefined()) throw Error(fn.undefined_message());
  if (!fn.is_function()) throw Error("'" + fn.type_name() + "' object is not callable");
  args.callee = fn.function_name();
  return fn.as_function()(args);
}

// An unknown filter or test fails where it is reached, as jinja2 treats one inside a branch: a
// template whose rarely taken branch uses one still serves every other conversation.
Value FilterExpr::apply(Context& ctx, const Value& input) const {
  if (!has_filter(name)) throw Error("no filter named '" + name + "'");
  CallArgs a = eval_args(ctx, args);
  return apply_filter(name, input, a);
}

Value FilterExpr::eval(Context& ctx) const {
  return apply(ctx, value->eval(ctx));
}

Value TestExpr::eval(Context& ctx) const {
  if (!has_test(name)) throw Error("no test named '" + name + "'");
  const Value v = value->eval(ctx);
  CallArgs a = eval_args(ctx, args);
  return Value(apply_test(name, v, a) != negated);
}

Value UnaryExpr::eval(Context& ctx) const {
  const Value v = operand->eval(ctx);
  switch (op) {
    case UnaryOp::kNot:
      return Value(!v.truthy());
    case UnaryOp::kNegate:
      return negate(v);
    case UnaryOp::kPlus:
      if (!v.is_number()) {
        if (v.is_undefined()) throw Error(v.undefined_message());
        throw Error("bad operand type for unary +: '" + v.type_name() + "'");
      }
      return v.kind() == Value::Kind::kBool ? Value(v.as_int()) : v;
  }
  return v;
}

Value BinaryExpr::eval(Context& ctx) const {
  const Value a = lhs->eval(ctx);
  // and / or return an operand, as in Python, and do not evaluate the right one when it cannot matter.
  if (op == BinaryOp::kAnd) return a.truthy() ? rhs->eval(ctx) : a;
  if (op == BinaryOp::kOr) return a.truthy() ? a : rhs->eval(ctx);
  const Value b = rhs->eval(ctx);
  switch (op) {
    case BinaryOp::kAdd:
      return add(a, b);
    case BinaryOp::kSub:
      return subtract(a, b);
    case BinaryOp::kMul:
      return multiply(a, b);
    case BinaryOp::kDiv:
      return divide(a, b);
    case BinaryOp::kFloorDiv:
      return floor_divide(a, b);
    case BinaryOp::kMod:
      if (a.is_string()) throw Error("string formatting with % is not supported; use ~ or + to join strings");
      return modulo(a, b);
    case BinaryOp::kPow:
      return power(a, b);
    case BinaryOp::kConcat: {
      std::string joined = a.str();
      joined += b.str();
      return Value(std::move(joined));
    }
    default:
      return Value(compare_op(op, a, b));
  }
}

Value CompareExpr::eval(Context& ctx) const {
  Value left = first->eval(ctx);
  for (const auto& [op, e] : rest) {
    Value right = e->eval(ctx);
    if (!compare_op(op, left, right)) return Value(false);
    left = std::move(right);
  }
  return Value(true);
}

Value CondExpr::eval(Context& ctx) const {
  if (cond->eval(ctx).truthy()) return then->eval(ctx);
  if (otherwise) return otherwise->eval(ctx);
  return Value::undefined("the inline if-expression evaluated to false and no else section was defined");
}

// ---- statements ----

void TextStmt::render(Context&, std::string& out) const {
  out += text;
}

void OutputStmt::render(Context& ctx, std::string& out) const {
  out += expr->eval(ctx).str();
}

void IfStmt::render(Context& ctx, std::string& out) const {
  for (const auto& [cond, body] : branches) {
    if (cond->eval(ctx).truthy()) {
      ctx.render_body(body, out);
      return;
    }
  }
  ctx.render_body(otherwise, out);
}

void ForStmt::render(Context& ctx, std::string& out) const {
  const Value seq = iterable->eval(ctx);
  if (seq.is_undefined()) {
    // Iterating an undefined value visits nothing (jinja2's default Undefined).
  } else if (!seq.is_list() && !seq.is_dict() && !seq.is_string()) {
    throw Error("'" + seq.type_name() + "' object is not iterable");
  }
  List items = seq.iterate();
  if (filter) {
    List kept;
    for (Value& item : items) {
      ctx.tick();
      Context::ScopeGuard scope(ctx);
      bind_targets(ctx, targets, item);
      if (filter->eval(ctx).truthy()) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  const int64_t n = static_cast<int64_t>(items.size());
  bool completed = false;  // jinja2 renders `else` unless some iteration ran its body to the end
  for (int64_t i = 0; i < n; ++i) {
    ctx.tick();
    Context::ScopeGuard scope(ctx);
    Dict loop;
    loop.set("index", Value(i + 1));
    loop.set("index0", Value(i));
    loop.set("revindex", Value(n - i));
    loop.set("revindex0", Value(n - i - 1));
    loop.set("first", Value(i == 0));
    loop.set("last", Value(i == n - 1));
    loop.set("length", Value(n));
    loop.set("depth", Value(int64_t{1}));
    loop.set("depth0", Value(int64_t{0}));
    loop.set("previtem",
             i > 0 ? items[static_cast<size_t>(i - 1)] : Value::undefined("there is no previous item"));
    loop.set("nextitem",
             i + 1 < n ? items[static_cast<size_t>(i + 1)] : Value::undefined("there is no next item"));
    loop.set("cycle", Value::function("loop.cycle", [i](CallArgs& a) {
               if (a.positional.empty()) throw Error("no items for cycling given");
               return a.positional[static_cast<size_t>(i) % a.positional.size()];
             }));
    ctx.assign("loop", Value(std::move(loop)));
    bind_targets(ctx, targets, items[static_cast<size_t>(i)]);
    ctx.render_body(body, out);
    const LoopControl c = ctx.control;
    ctx.control = LoopControl::kNone;
    if (c == LoopControl::kBreak) break;
    completed = completed || c == LoopControl::kNone;
  }
  if (!completed) {
    Context::ScopeGuard scope(ctx);  // the else body is a scope of its own too
    ctx.render_body(otherwise, out);
  }
}

void SetStmt::render(Context& ctx, std::string& out) const {
  (void)out;
  Value v;
  if (value) {
    v = value->eval(ctx);
  } else {
    std::string captured;
    ctx.render_body(body, captured);
    v = Value(std::move(captured));
    for (const auto& f : filters)
      v = f->apply(ctx, v);
  }
  if (attribute.empty()) {
    bind_targets(ctx, targets, v);
    return;
  }
  const Value ns = ctx.lookup(targets[0]);
  if (!ns.is_namespace()) throw Error("cannot assign attribute on non-namespace object '" + targets[0] + "'");
  // Namespaces are the one mutable value: one holding a namespace or a macro could come to hold
  // itself, and nesting would grow past what was checked when the value was built.
  if (v.holds_reference()) throw Error("a namespace attribute cannot hold a namespace or a macro");
  if (v.nesting() + 1 > kMaxNesting)
    throw Error("the template nests lists or dicts more than " + std::to_string(kMaxNesting) + " deep");
  ns.namespace_dict().set(attribute, std::move(v));
}

void MacroStmt::render(Context& ctx, std::string&) const {
  Context* c = &ctx;  // macros cannot outlive the render they are defined in
  const MacroStmt* self = this;
  // jinja2's macros close over the scopes they are defined in (a loop variable, an outer macro's
  // parameters), shared rather than copied: later assignments there are seen, and the macro, named
  // in the innermost one, can call itself. That scope holding the macro holding the scope is a
  // cycle, broken when the scope ends (ScopeGuard and MacroFrame empty it).
  Context::Closure closure = ctx.enclosing_scopes();
  ctx.assign(name, Value::function(
                       name,
                       [c, self, closure](CallArgs& a) {
                         if (a.positional.size() > self->params.size())
                           throw Error("macro '" + self->name + "' takes not more than " +
                                       std::to_string(self->params.size()) + " argument(s)");
                         std::vector<Value> bound(self->params.size());
                         std::vector<bool> given(self->params.size(), false);
                         for (size_t i = 0; i < a.positional.size(); ++i) {
                           bound[i] = a.positional[i];
                           given[i] = true;
                         }
                         for (const auto& [k, v] : a.keyword) {
                           size_t i = 0;
                           while (i < self->params.size() && self->params[i].first != k)
                             ++i;
                           if (i == self->params.size())
                             throw Error("macro '" + self->name + "' takes no keyword argument '" + k + "'");
                           bound[i] = v;
                           given[i] = true;
                         }
                         Context::MacroFrame frame(*c, closure);
                         for (size_t i = 0; i < self->params.size(); ++i) {
                           const auto& [param, fallback] = self->params[i];
                           Value v = given[i] ? bound[i]
                                     : fallback
                                         ? fallback->eval(*c)
                                         : Value::undefined("parameter '" + param + "' was not provided");
                           c->assign(param, std::move(v));
                         }
                         std::string out;
                         c->render_body(self->body, out);
                         c->control = LoopControl::kNone;
                         return Value(std::move(out));
                       },
                       /*closes_over_scopes=*/true));
}

void LoopControlStmt::render(Context& ctx, std::string&) const {
  ctx.control = control;
}

void FilterBlockStmt::render(Context& ctx, std::string& out) const {
  Context::ScopeGuard scope(ctx);  // both forms are call blocks in jinja2: a `set` inside stays inside
  if (filters.empty()) {
    ctx.render_body(body, out);
    return;
  }
  std::string captured;
  ctx.render_body(body, captured);
  if (ctx.control != LoopControl::kNone) return;  // break / continue inside: jinja2 writes nothing
  Value v(std::move(captured));
  for (const auto& f : filters)
    v = f->apply(ctx, v);
  out += v.str();
}

// ---- Template ----

Template::Template(std::string_view source) : body_(parse_template(source)) {}
Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

std::string Template::render(const Value& variables, const RenderOptions& options) const {
  if (!variables.is_dict()) throw Error("template variables must be a mapping");
  Context ctx(options, variables);
  std::string out;
  try {
    ctx.render_body(body_, out);
  } catch (const RaisedError&) {
    throw;
  } catch (const Error& e) {
    throw Error("line " + std::to_string(ctx.line) + ": " + e.what());
  }
  return out;
}

std::string Template::render(const nlohmann::ordered_json& variables, const RenderOptions& options) const {
  return render(Value::from_json(variables), options);
}

}  // namespace kvserve::jinja
