// Python's str operations over UTF-8 text, by code point, as chat templates call them
// (content.strip(), role|capitalize, content.split('</think>')[-1], ...). Case mappings are
// Unicode's (GNU libunistring); whitespace is Python's str.isspace() set.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kvserve::jinja::text {

std::u32string decode(std::string_view s);  // bytes that are not UTF-8 pass as U+DC80.. (round-trip)
std::string encode(std::u32string_view s);

bool is_space(char32_t c);          // Python str.isspace()
size_t length(std::string_view s);  // code points

// strip / lstrip / rstrip; `chars` null: whitespace.
std::string strip(std::string_view s, const std::string* chars, bool left, bool right);
std::string upper(std::string_view s);
std::string lower(std::string_view s);
std::string capitalize(std::string_view s);    // Python: first character title-cased, the rest lower
std::string title_python(std::string_view s);  // str.title(): each run of cased letters capitalised
std::string title_jinja(std::string_view s);   // the title filter: words split at whitespace - ( { [ <
// str.split(): `sep` null splits at whitespace runs; maxsplit < 0 means no limit.
std::vector<std::string> split(std::string_view s, const std::string* sep, int64_t maxsplit);
std::vector<std::string> splitlines(std::string_view s);
std::string replace(std::string_view s, std::string_view old, std::string_view with, int64_t count);
int64_t find(std::string_view s, std::string_view sub);  // code point index, -1 when absent
int64_t count(std::string_view s, std::string_view sub);

}  // namespace kvserve::jinja::text
