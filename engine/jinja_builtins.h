// What a chat template can call: Jinja's filters and tests (the subset chat templates use), the
// methods of str and dict, and the globals Hugging Face provides (range, namespace, dict,
// raise_exception, strftime_now). Names outside these raise where rendering reaches them (as jinja2
// treats an unknown filter inside a branch), never silently ignored.
#pragma once

#include <ctime>
#include <functional>
#include <string>
#include <string_view>

#include "engine/jinja_value.h"

namespace kvserve::jinja {

bool has_filter(std::string_view name);
bool has_test(std::string_view name);

// `call` lets filters such as map() and select() call back into other filters and tests.
Value apply_filter(std::string_view name, const Value& input, CallArgs& args);
bool apply_test(std::string_view name, const Value& input, CallArgs& args);

// obj.name: a bound method of str or dict, a dict's or namespace's entry, else undefined.
Value get_attribute(const Value& object, const std::string& name);
// obj[key]: a dict entry, a list or str element (negative indices count from the end), else for a
// string key the attribute; undefined when there is none.
Value get_item(const Value& object, const Value& key);
// obj[start:stop:step] with Python's rules.
Value slice(const Value& object, const Value& start, const Value& stop, const Value& step);

// Python json.dumps(value, ensure_ascii, indent, separators, sort_keys), as HF's tojson filter calls it.
std::string to_json_text(const Value& value, bool ensure_ascii, const Value& indent, const Value& separators,
                         bool sort_keys);

// The template's globals: range, namespace, dict, raise_exception and strftime_now (formatting `now`).
Dict make_globals(const std::tm& now);

}  // namespace kvserve::jinja
