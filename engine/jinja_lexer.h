// Jinja source -> tokens, with the lexer settings Hugging Face renders chat templates under:
// trim_blocks (the newline after a block or comment tag goes), lstrip_blocks (spaces and tabs before
// a block or comment tag alone at the start of its line go), `-` / `+` whitespace control on tags,
// {% raw %} blocks, newlines normalised to "\n" and one trailing newline dropped (jinja2's defaults).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "engine/jinja_value.h"

namespace kvserve::jinja {

// Text outside tags is kData; inside {{ }} and {% %} come names, literals and operators.
enum class Tok { kData, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEnd };

struct Token {
  Tok type;
  std::string text;  // data, name, operator, or the unescaped string
  Value literal;     // numbers
  int line;
};

// Ends with a kEnd token. Throws Error "line N: ..." for an unclosed tag, comment, string or raw block.
std::vector<Token> tokenize(std::string_view source);

// Throws Error "line N: what".
[[noreturn]] void syntax_error(int line, const std::string& what);

}  // namespace kvserve::jinja
