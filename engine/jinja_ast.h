// The parsed form of a Jinja template (engine/jinja_parser.cc builds it, engine/jinja_render.cc
// evaluates it): expressions compute Values, statements append text to the output.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/jinja_value.h"

namespace kvserve::jinja {

class Context;

struct Expr {
  explicit Expr(int line) : line(line) {}
  virtual ~Expr() = default;
  virtual Value eval(Context& ctx) const = 0;
  int line;
  int depth = 1;  // of the tree below, this node included; the parser bounds it
};
using ExprPtr = std::unique_ptr<Expr>;

struct Stmt {
  explicit Stmt(int line) : line(line) {}
  virtual ~Stmt() = default;
  virtual void render(Context& ctx, std::string& out) const = 0;
  int line;
};
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

// Positional arguments, then name=value ones, as written at a call, filter or test.
struct ArgExprs {
  std::vector<ExprPtr> positional;
  std::vector<std::pair<std::string, ExprPtr>> keyword;
};

// ---- expressions ----

struct LiteralExpr final : Expr {
  LiteralExpr(int line, Value v) : Expr(line), value(std::move(v)) {}
  Value eval(Context& ctx) const override;
  Value value;
};

struct NameExpr final : Expr {
  NameExpr(int line, std::string n) : Expr(line), name(std::move(n)) {}
  Value eval(Context& ctx) const override;
  std::string name;
};

struct ListExpr final : Expr {
  ListExpr(int line, bool t) : Expr(line), tuple(t) {}
  Value eval(Context& ctx) const override;
  std::vector<ExprPtr> items;
  bool tuple;
};

struct DictExpr final : Expr {
  using Expr::Expr;
  Value eval(Context& ctx) const override;
  std::vector<std::pair<ExprPtr, ExprPtr>> items;
};

// obj.name: a method or attribute first, then the item `name` (Jinja's getattr order).
struct AttrExpr final : Expr {
  AttrExpr(int line, ExprPtr o, std::string n) : Expr(line), object(std::move(o)), name(std::move(n)) {}
  Value eval(Context& ctx) const override;
  ExprPtr object;
  std::string name;
};

// obj[key]: the item first, then an attribute named by a string key.
struct ItemExpr final : Expr {
  ItemExpr(int line, ExprPtr o, ExprPtr k) : Expr(line), object(std::move(o)), key(std::move(k)) {}
  Value eval(Context& ctx) const override;
  ExprPtr object;
  ExprPtr key;
};

struct SliceExpr final : Expr {
  SliceExpr(int line, ExprPtr o) : Expr(line), object(std::move(o)) {}
  Value eval(Context& ctx) const override;
  ExprPtr object;
  ExprPtr start, stop, step;  // each may be null
};

struct CallExpr final : Expr {
  CallExpr(int line, ExprPtr c) : Expr(line), callee(std::move(c)) {}
  Value eval(Context& ctx) const override;
  ExprPtr callee;
  ArgExprs args;
};

// value | name(args); `value` is null inside a {% filter %} block, which filters its body's text.
struct FilterExpr final : Expr {
  FilterExpr(int line, ExprPtr v, std::string n) : Expr(line), value(std::move(v)), name(std::move(n)) {}
  Value eval(Context& ctx) const override;
  Value apply(Context& ctx, const Value& input) const;
  ExprPtr value;
  std::string name;
  ArgExprs args;
};

struct TestExpr final : Expr {
  TestExpr(int line, ExprPtr v, std::string n, bool neg)
      : Expr(line), value(std::move(v)), name(std::move(n)), negated(neg) {}
  Value eval(Context& ctx) const override;
  ExprPtr value;
  std::string name;
  ArgExprs args;
  bool negated;
};

enum class UnaryOp { kNot, kNegate, kPlus };
struct UnaryExpr final : Expr {
  UnaryExpr(int line, UnaryOp o, ExprPtr e) : Expr(line), op(o), operand(std::move(e)) {}
  Value eval(Context& ctx) const override;
  UnaryOp op;
  ExprPtr operand;
};

enum class BinaryOp {
  kAdd,
  kSub,
  kMul,
  kDiv,
  kFloorDiv,
  kMod,
  kPow,
  kConcat,
  kAnd,
  kOr,
  kEq,
  kNe,
  kLt,
  kLe,
  kGt,
  kGe,
  kIn,
  kNotIn
};
struct BinaryExpr final : Expr {
  BinaryExpr(int line, BinaryOp o, ExprPtr l, ExprPtr r)
      : Expr(line), op(o), lhs(std::move(l)), rhs(std::move(r)) {}
  Value eval(Context& ctx) const override;
  BinaryOp op;
  ExprPtr lhs, rhs;
};

// a < b <= c: each comparison with the next operand, all must hold (Python's chaining).
struct CompareExpr final : Expr {
  CompareExpr(int line, ExprPtr first) : Expr(line), first(std::move(first)) {}
  Value eval(Context& ctx) const override;
  ExprPtr first;
  std::vector<std::pair<BinaryOp, ExprPtr>> rest;
};

// then if cond else otherwise; without `else` the false branch is undefined.
struct CondExpr final : Expr {
  using Expr::Expr;
  Value eval(Context& ctx) const override;
  ExprPtr cond, then, otherwise;
};

// ---- statements ----

struct TextStmt final : Stmt {
  TextStmt(int line, std::string t) : Stmt(line), text(std::move(t)) {}
  void render(Context& ctx, std::string& out) const override;
  std::string text;
};

struct OutputStmt final : Stmt {
  OutputStmt(int line, ExprPtr e) : Stmt(line), expr(std::move(e)) {}
  void render(Context& ctx, std::string& out) const override;
  ExprPtr expr;
};

struct IfStmt final : Stmt {
  using Stmt::Stmt;
  void render(Context& ctx, std::string& out) const override;
  std::vector<std::pair<ExprPtr, Body>> branches;  // if, then each elif
  Body otherwise;
};

struct ForStmt final : Stmt {
  using Stmt::Stmt;
  void render(Context& ctx, std::string& out) const override;
  std::vector<std::string> targets;  // one name, or several to unpack each item into
  ExprPtr iterable;
  ExprPtr filter;  // `for x in xs if cond`: items for which cond is false are skipped
  Body body;
  Body otherwise;  // rendered when no item was visited
};

// {% set a = e %}, {% set a, b = e %}, {% set ns.attr = e %}, or {% set a %}body{% endset %}.
struct SetStmt final : Stmt {
  using Stmt::Stmt;
  void render(Context& ctx, std::string& out) const override;
  std::vector<std::string> targets;
  std::string attribute;  // non-empty: targets[0] is a namespace and this its attribute
  ExprPtr value;          // null for the block form
  Body body;
  std::vector<std::unique_ptr<FilterExpr>> filters;  // {% set a | upper %}...
};

struct MacroStmt final : Stmt {
  using Stmt::Stmt;
  void render(Context& ctx, std::string& out) const override;
  std::string name;
  std::vector<std::pair<std::string, ExprPtr>> params;  // default may be null
  Body body;
};

enum class LoopControl { kNone, kBreak, kContinue };
struct LoopControlStmt final : Stmt {
  LoopControlStmt(int line, LoopControl c) : Stmt(line), control(c) {}
  void render(Context& ctx, std::string& out) const override;
  LoopControl control;
};

// {% filter f | g %}body{% endfilter %}; also {% generation %} (no filters: the body as it is).
struct FilterBlockStmt final : Stmt {
  using Stmt::Stmt;
  void render(Context& ctx, std::string& out) const override;
  std::vector<std::unique_ptr<FilterExpr>> filters;
  Body body;
};

// Parses template source (engine/jinja_parser.cc); throws Error "line N: ...".
Body parse_template(std::string_view source);

}  // namespace kvserve::jinja
