// Tokens -> AST. Operator precedence and the statement forms follow Jinja's own parser
// (jinja2/parser.py): or < and < not < comparisons < + - < ~ < * / // % < ** < unary - + < postfix
// (attribute, item, call), filters and tests.
#include <algorithm>
#include <string_view>
#include <unordered_set>

#include "engine/jinja_ast.h"
#include "engine/jinja_lexer.h"

namespace kvserve::jinja {
namespace {

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  Body parse_all() {
    Body body = parse_body({});
    if (peek().type != Tok::kEnd) syntax_error(peek().line, "unexpected tag");
    return body;
  }

 private:
  const Token& peek(size_t ahead = 0) const { return t_[std::min(i_ + ahead, t_.size() - 1)]; }
  const Token& next() { return t_[i_ < t_.size() - 1 ? i_++ : i_]; }
  bool at_op(std::string_view op) const { return peek().type == Tok::kOp && peek().text == op; }
  bool at_name(std::string_view n) const { return peek().type == Tok::kName && peek().text == n; }
  bool accept_op(std::string_view op) {
    if (!at_op(op)) return false;
    ++i_;
    return true;
  }
  bool accept_name(std::string_view n) {
    if (!at_name(n)) return false;
    ++i_;
    return true;
  }
  void expect_op(std::string_view op) {
    if (!accept_op(op)) syntax_error(peek().line, "expected '" + std::string(op) + "'" + found());
  }
  void expect_name(std::string_view n) {
    if (!accept_name(n)) syntax_error(peek().line, "expected '" + std::string(n) + "'" + found());
  }
  std::string expect_identifier() {
    if (peek().type != Tok::kName) syntax_error(peek().line, "expected a name" + found());
    return next().text;
  }
  void expect_block_end() {
    if (peek().type != Tok::kBlockEnd)
      syntax_error(peek().line, "expected the end of the tag '%}'" + found());
    ++i_;
  }
  std::string found() const {
    switch (peek().type) {
      case Tok::kEnd:
        return ", found the end of the template";
      case Tok::kBlockEnd:
      case Tok::kVarEnd:
        return ", found the end of the tag";
      case Tok::kData:
        return ", found text";
      default:
        return ", found '" + peek().text + "'";
    }
  }

  // Statements until a {% tag %} whose name is in `ends` (left unread) or the end of the template.
  Body parse_body(const std::unordered_set<std::string_view>& ends) {
    Body body;
    while (true) {
      const Token& tok = peek();
      if (tok.type == Tok::kEnd) {
        if (!ends.empty()) syntax_error(tok.line, "the template ends inside a block; expected " + list(ends));
        return body;
      }
      if (tok.type == Tok::kData) {
        body.push_back(std::make_unique<TextStmt>(tok.line, tok.text));
        ++i_;
      } else if (tok.type == Tok::kVarBegin) {
        ++i_;
        auto e = parse_tuple_or_expr();
        if (peek().type != Tok::kVarEnd)
          syntax_error(peek().line, "expected the end of the tag '}}'" + found());
        ++i_;
        body.push_back(std::make_unique<OutputStmt>(tok.line, std::move(e)));
      } else if (tok.type == Tok::kBlockBegin) {
        const Token& name = peek(1);
        if (name.type != Tok::kName) syntax_error(name.line, "expected a statement name after '{%'");
        if (ends.count(name.text)) return body;
        ++i_;
        body.push_back(parse_statement());
      } else {
        syntax_error(tok.line, "unexpected token");
      }
    }
  }

  static std::string list(const std::unordered_set<std::string_view>& names) {
    std::string out;
    for (std::string_view n : names)
      out += (out.empty() ? "" : " or ") + std::string("{% ") + std::string(n) + " %}";
    return out;
  }

  // Consumes `{% name` ... `%}` of an end or middle tag the caller saw coming.
  std::string take_tag_name() {
    ++i_;  // {%
    return next().text;
  }

  // Nesting (blocks in blocks, parentheses, unary operators) deeper than any real template: the
  // recursive descent would otherwise run out of stack on a hostile one.
  static constexpr int kMaxNesting = 200;
  class Nesting {
   public:
    Nesting(Parser& p, int line) : p_(p) {
      if (++p_.nesting_ > kMaxNesting)
        syntax_error(line, "nested more than " + std::to_string(kMaxNesting) + " deep");
    }
    ~Nesting() { --p_.nesting_; }
    Nesting(const Nesting&) = delete;
    Nesting& operator=(const Nesting&) = delete;

   private:
    Parser& p_;
  };

  // Expressions are evaluated and freed by recursion: a tree deeper than any real template (a sum
  // of 40000 terms, say) is refused here instead of overflowing the stack when rendered.
  static constexpr int kMaxExprDepth = 512;
  static int depth(const ExprPtr& e) { return e ? e->depth : 0; }
  static int depth(const std::vector<ExprPtr>& items) {
    int d = 0;
    for (const ExprPtr& e : items)
      d = std::max(d, e->depth);
    return d;
  }
  static int depth(const ArgExprs& args) {
    int d = depth(args.positional);
    for (const auto& kw : args.keyword)
      d = std::max(d, kw.second->depth);
    return d;
  }
  template <typename Node>
  static std::unique_ptr<Node> sized(std::unique_ptr<Node> node, int children_depth) {
    node->depth = children_depth + 1;
    if (node->depth > kMaxExprDepth)
      syntax_error(node->line, "the expression nests more than " + std::to_string(kMaxExprDepth) + " deep");
    return node;
  }

  static ExprPtr binary(int line, BinaryOp op, ExprPtr lhs, ExprPtr rhs) {
    const int d = std::max(lhs->depth, rhs->depth);
    return sized(std::make_unique<BinaryExpr>(line, op, std::move(lhs), std::move(rhs)), d);
  }
  static ExprPtr unary(int line, UnaryOp op, ExprPtr operand) {
    const int d = operand->depth;
    return sized(std::make_unique<UnaryExpr>(line, op, std::move(operand)), d);
  }

  StmtPtr parse_statement() {
    const Nesting nesting(*this, peek().line);
    const Token& tok = next();
    const int line = tok.line;
    const std::string& kw = tok.text;
    if (kw == "if") return parse_if(line);
    if (kw == "for") return parse_for(line);
    if (kw == "set") return parse_set(line);
    if (kw == "macro") return parse_macro(line);
    if (kw == "filter") return parse_filter_block(line);
    if (kw == "generation") {
      expect_block_end();
      auto s = std::make_unique<FilterBlockStmt>(line);
      s->body = parse_body({"endgeneration"});
      take_tag_name();
      expect_block_end();
      return s;
    }
    if (kw == "break" || kw == "continue") {
      if (loop_depth_ == 0) syntax_error(line, "{% " + kw + " %} outside a for loop");
      expect_block_end();
      return std::make_unique<LoopControlStmt>(line,
                                               kw == "break" ? LoopControl::kBreak : LoopControl::kContinue);
    }
    static const std::unordered_set<std::string_view> kUnsupported = {
        "include", "import", "from", "extends", "block", "call", "with", "autoescape", "do"};
    if (kUnsupported.count(kw))
      syntax_error(line, "{% " + kw + " %} is not supported in chat templates by kvserve");
    syntax_error(line, "unknown tag '" + kw + "'");
  }

  StmtPtr parse_if(int line) {
    auto s = std::make_unique<IfStmt>(line);
    auto cond = parse_tuple_or_expr();
    expect_block_end();
    while (true) {
      Body body = parse_body({"elif", "else", "endif"});
      s->branches.emplace_back(std::move(cond), std::move(body));
      const std::string tag = take_tag_name();
      if (tag == "elif") {
        cond = parse_tuple_or_expr();
        expect_block_end();
        continue;
      }
      expect_block_end();
      if (tag == "else") {
        s->otherwise = parse_body({"endif"});
        take_tag_name();
        expect_block_end();
      }
      return s;
    }
  }

  StmtPtr parse_for(int line) {
    auto s = std::make_unique<ForStmt>(line);
    do {
      s->targets.push_back(expect_identifier());
    } while (accept_op(","));
    expect_name("in");
    s->iterable = parse_tuple_or_expr(/*with_condexpr=*/false);
    if (accept_name("if")) s->filter = parse_expression();
    if (accept_name("recursive")) syntax_error(line, "recursive for loops are not supported");
    expect_block_end();
    ++loop_depth_;
    s->body = parse_body({"endfor", "else"});
    --loop_depth_;
    if (take_tag_name() == "else") {
      expect_block_end();
      s->otherwise = parse_body({"endfor"});
      take_tag_name();
    }
    expect_block_end();
    return s;
  }

  StmtPtr parse_set(int line) {
    auto s = std::make_unique<SetStmt>(line);
    s->targets.push_back(expect_identifier());
    if (accept_op(".")) {
      s->attribute = expect_identifier();
    } else {
      while (accept_op(","))
        s->targets.push_back(expect_identifier());
    }
    if (accept_op("=")) {
      s->value = parse_tuple_or_expr();
      expect_block_end();
      return s;
    }
    if (s->targets.size() != 1 || !s->attribute.empty()) syntax_error(line, "expected '=' in {% set %}");
    while (accept_op("|"))
      s->filters.push_back(parse_filter_call(nullptr));
    expect_block_end();
    s->body = parse_body({"endset"});
    take_tag_name();
    expect_block_end();
    return s;
  }

  StmtPtr parse_macro(int line) {
    auto s = std::make_unique<MacroStmt>(line);
    s->name = expect_identifier();
    expect_op("(");
    while (!accept_op(")")) {
      if (!s->params.empty()) expect_op(",");
      if (accept_op(")")) break;
      std::string param = expect_identifier();
      ExprPtr fallback;
      if (accept_op("=")) fallback = parse_expression();
      s->params.emplace_back(std::move(param), std::move(fallback));
    }
    expect_block_end();
    const int outer_loops = loop_depth_;
    loop_depth_ = 0;  // a loop around the macro's definition is not around its body
    s->body = parse_body({"endmacro"});
    loop_depth_ = outer_loops;
    take_tag_name();
    if (peek().type == Tok::kName) ++i_;  // {% endmacro name %}
    expect_block_end();
    return s;
  }

  StmtPtr parse_filter_block(int line) {
    auto s = std::make_unique<FilterBlockStmt>(line);
    do {
      s->filters.push_back(parse_filter_call(nullptr));
    } while (accept_op("|"));
    expect_block_end();
    s->body = parse_body({"endfilter"});
    take_tag_name();
    expect_block_end();
    return s;
  }

  // ---- expressions (precedence as in Jinja: or < and < not < comparisons < + - < ~ < * / // % < **
  // < unary - + < postfix (attribute, item, call), filters and tests) ----

  ExprPtr parse_tuple_or_expr(bool with_condexpr = true) {
    const int line = peek().line;
    ExprPtr first = with_condexpr ? parse_expression() : parse_or();
    if (!at_op(",")) return first;
    auto tuple = std::make_unique<ListExpr>(line, true);
    tuple->items.push_back(std::move(first));
    while (accept_op(",")) {
      if (peek().type == Tok::kBlockEnd || peek().type == Tok::kVarEnd || at_op(")") || at_name("in")) break;
      tuple->items.push_back(with_condexpr ? parse_expression() : parse_or());
    }
    const int d = depth(tuple->items);
    return sized(std::move(tuple), d);
  }

  ExprPtr parse_expression() {
    const int line = peek().line;
    const Nesting nesting(*this, line);  // `a if b else c if d else ...` recurses here
    ExprPtr e = parse_or();
    while (accept_name("if")) {
      auto c = std::make_unique<CondExpr>(line);
      c->then = std::move(e);
      c->cond = parse_or();
      if (accept_name("else")) c->otherwise = parse_expression();
      const int d = std::max({depth(c->then), depth(c->cond), depth(c->otherwise)});
      e = sized(std::move(c), d);
    }
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr e = parse_and();
    while (at_name("or")) {
      const int line = next().line;
      e = binary(line, BinaryOp::kOr, std::move(e), parse_and());
    }
    return e;
  }

  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (at_name("and")) {
      const int line = next().line;
      e = binary(line, BinaryOp::kAnd, std::move(e), parse_not());
    }
    return e;
  }

  ExprPtr parse_not() {
    const Nesting nesting(*this, peek().line);
    if (at_name("not")) {
      const int line = next().line;
      return unary(line, UnaryOp::kNot, parse_not());
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const int line = peek().line;
    ExprPtr first = parse_math1();
    std::unique_ptr<CompareExpr> cmp;
    while (true) {
      BinaryOp op;
      if (accept_op("=="))
        op = BinaryOp::kEq;
      else if (accept_op("!="))
        op = BinaryOp::kNe;
      else if (accept_op("<"))
        op = BinaryOp::kLt;
      else if (accept_op("<="))
        op = BinaryOp::kLe;
      else if (accept_op(">"))
        op = BinaryOp::kGt;
      else if (accept_op(">="))
        op = BinaryOp::kGe;
      else if (accept_name("in"))
        op = BinaryOp::kIn;
      else if (at_name("not") && peek(1).type == Tok::kName && peek(1).text == "in") {
        i_ += 2;
        op = BinaryOp::kNotIn;
      } else {
        break;
      }
      if (!cmp) cmp = std::make_unique<CompareExpr>(line, std::move(first));
      cmp->rest.emplace_back(op, parse_math1());
    }
    if (!cmp) return first;
    int d = cmp->first->depth;
    for (const auto& r : cmp->rest)
      d = std::max(d, r.second->depth);
    return sized(std::move(cmp), d);
  }

  ExprPtr parse_math1() {
    ExprPtr e = parse_concat();
    while (at_op("+") || at_op("-")) {
      const Token& t = next();
      e = binary(t.line, t.text == "+" ? BinaryOp::kAdd : BinaryOp::kSub, std::move(e), parse_concat());
    }
    return e;
  }

  ExprPtr parse_concat() {
    ExprPtr e = parse_math2();
    while (at_op("~")) {
      const int line = next().line;
      e = binary(line, BinaryOp::kConcat, std::move(e), parse_math2());
    }
    return e;
  }

  ExprPtr parse_math2() {
    ExprPtr e = parse_pow();
    while (at_op("*") || at_op("/") || at_op("//") || at_op("%")) {
      const Token& t = next();
      const BinaryOp op = t.text == "*"    ? BinaryOp::kMul
                          : t.text == "/"  ? BinaryOp::kDiv
                          : t.text == "//" ? BinaryOp::kFloorDiv
                                           : BinaryOp::kMod;
      e = binary(t.line, op, std::move(e), parse_pow());
    }
    return e;
  }

  ExprPtr parse_pow() {
    ExprPtr e = parse_unary(true);
    while (at_op("**")) {
      const int line = next().line;
      e = binary(line, BinaryOp::kPow, std::move(e), parse_unary(true));
    }
    return e;
  }

  ExprPtr parse_unary(bool with_filter) {
    const int line = peek().line;
    const Nesting nesting(*this, line);
    ExprPtr e;
    if (accept_op("-")) {
      e = unary(line, UnaryOp::kNegate, parse_unary(false));
    } else if (accept_op("+")) {
      e = unary(line, UnaryOp::kPlus, parse_unary(false));
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filters_and_tests(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = next();
    switch (t.type) {
      case Tok::kName:
        if (t.text == "true" || t.text == "True") return std::make_unique<LiteralExpr>(t.line, Value(true));
        if (t.text == "false" || t.text == "False")
          return std::make_unique<LiteralExpr>(t.line, Value(false));
        if (t.text == "none" || t.text == "None") return std::make_unique<LiteralExpr>(t.line, Value::none());
        return std::make_unique<NameExpr>(t.line, t.text);
      case Tok::kString: {
        std::string s = t.text;
        while (peek().type == Tok::kString)
          s += next().text;  // adjacent literals join
        return std::make_unique<LiteralExpr>(t.line, Value(std::move(s)));
      }
      case Tok::kInt:
      case Tok::kFloat:
        return std::make_unique<LiteralExpr>(t.line, t.literal);
      case Tok::kOp:
        if (t.text == "(") {
          if (accept_op(")")) return std::make_unique<ListExpr>(t.line, true);
          ExprPtr e = parse_tuple_or_expr();
          expect_op(")");
          return e;
        }
        if (t.text == "[") {
          auto list = std::make_unique<ListExpr>(t.line, false);
          while (!accept_op("]")) {
            if (!list->items.empty()) expect_op(",");
            if (accept_op("]")) break;
            list->items.push_back(parse_expression());
          }
          const int d = depth(list->items);
          return sized(std::move(list), d);
        }
        if (t.text == "{") {
          auto dict = std::make_unique<DictExpr>(t.line);
          while (!accept_op("}")) {
            if (!dict->items.empty()) expect_op(",");
            if (accept_op("}")) break;
            ExprPtr key = parse_expression();
            expect_op(":");
            dict->items.emplace_back(std::move(key), parse_expression());
          }
          int d = 0;
          for (const auto& [k, v] : dict->items)
            d = std::max({d, k->depth, v->depth});
          return sized(std::move(dict), d);
        }
        break;
      default:
        break;
    }
    --i_;
    syntax_error(t.line, "expected an expression" + found());
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      const int line = peek().line;
      if (accept_op(".")) {
        if (peek().type == Tok::kInt) {
          const int d = e->depth + 1;
          e = sized(std::make_unique<ItemExpr>(line, std::move(e),
                                               std::make_unique<LiteralExpr>(line, next().literal)),
                    d);
        } else {
          const int d = e->depth;
          e = sized(std::make_unique<AttrExpr>(line, std::move(e), expect_identifier()), d);
        }
      } else if (accept_op("[")) {
        e = parse_subscript(line, std::move(e));
      } else if (at_op("(")) {
        auto call = std::make_unique<CallExpr>(line, std::move(e));
        call->args = parse_call_args();
        const int d = std::max(call->callee->depth, depth(call->args));
        e = sized(std::move(call), d);
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(int line, ExprPtr object) {
    ExprPtr parts[3];
    int colons = 0;
    while (!accept_op("]")) {
      if (accept_op(":")) {
        if (++colons > 2) syntax_error(line, "a slice takes at most two ':'");
        continue;
      }
      if (parts[colons]) syntax_error(line, "expected ':' or ']'" + found());
      parts[colons] = parse_expression();
    }
    if (colons == 0) {
      if (!parts[0]) syntax_error(line, "empty subscript []");
      const int d = std::max(object->depth, parts[0]->depth);
      return sized(std::make_unique<ItemExpr>(line, std::move(object), std::move(parts[0])), d);
    }
    auto s = std::make_unique<SliceExpr>(line, std::move(object));
    s->start = std::move(parts[0]);
    s->stop = std::move(parts[1]);
    s->step = std::move(parts[2]);
    const int d = std::max({depth(s->object), depth(s->start), depth(s->stop), depth(s->step)});
    return sized(std::move(s), d);
  }

  ArgExprs parse_call_args() {
    ArgExprs args;
    expect_op("(");
    while (!accept_op(")")) {
      if (!args.positional.empty() || !args.keyword.empty()) expect_op(",");
      if (accept_op(")")) break;
      if (peek().type == Tok::kName && peek(1).type == Tok::kOp && peek(1).text == "=") {
        std::string name = next().text;
        ++i_;
        args.keyword.emplace_back(std::move(name), parse_expression());
      } else {
        if (!args.keyword.empty())
          syntax_error(peek().line, "a positional argument follows a keyword argument");
        args.positional.push_back(parse_expression());
      }
    }
    return args;
  }

  std::unique_ptr<FilterExpr> parse_filter_call(ExprPtr value) {
    const int line = peek().line;
    std::string name = expect_identifier();
    while (accept_op("."))
      name += "." + expect_identifier();
    auto f = std::make_unique<FilterExpr>(line, std::move(value), std::move(name));
    if (at_op("(")) f->args = parse_call_args();
    const int d = std::max(depth(f->value), depth(f->args));
    return sized(std::move(f), d);
  }

  ExprPtr parse_filters_and_tests(ExprPtr e) {
    while (true) {
      if (accept_op("|")) {
        e = parse_postfix(parse_filter_call(std::move(e)));
      } else if (at_name("is")) {
        const int line = next().line;
        const bool negated = accept_name("not");
        std::string name = expect_identifier();
        auto test = std::make_unique<TestExpr>(line, std::move(e), std::move(name), negated);
        const Token& a = peek();
        if (at_op("(")) {
          test->args = parse_call_args();
        } else if ((a.type == Tok::kName && a.text != "else" && a.text != "or" && a.text != "and" &&
                    a.text != "if" && a.text != "is" && a.text != "in" && a.text != "not") ||
                   a.type == Tok::kString || a.type == Tok::kInt || a.type == Tok::kFloat || at_op("[") ||
                   at_op("{")) {
          test->args.positional.push_back(parse_postfix(parse_primary()));  // `is divisibleby 3`
        }
        const int d = std::max(test->value->depth, depth(test->args));
        e = sized(std::move(test), d);
      } else {
        return e;
      }
    }
  }

  std::vector<Token> t_;
  size_t i_ = 0;
  int loop_depth_ = 0;  // for-loop bodies the parser is inside, for break / continue
  int nesting_ = 0;
};

}  // namespace

Body parse_template(std::string_view source) {
  return Parser(tokenize(source)).parse_all();
}

}  // namespace kvserve::jinja
