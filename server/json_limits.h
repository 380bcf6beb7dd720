// Bounds on JSON text, checked in one linear pass before it is parsed, for text from outside (a
// request body, a tool call's arguments, a model's reply): nlohmann's parser and dump() recurse once
// per nesting level, so "[[[[..." deep enough overflows the stack; and an ordered object (kept in
// the order written, as the API keeps the client's key order) finds each key by a linear search, so
// parsing an object of n members costs n^2.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kvserve {

// What in `text` is over the bounds ("nested deeper than 256 levels", "an object with more than
// 1024 members"), or "" when it is within them. Brackets, braces and commas inside strings do not
// count. Text that is not JSON may pass: the parser then says what is wrong with it.
std::string json_over_limits(std::string_view text, int max_depth, size_t max_members);

}  // namespace kvserve
