// JSON schema -> regular expression (engine/regex_dfa.h's dialect), for structured output: the
// regex matches exactly the JSON texts that are instances of the schema written in one layout.
//
// Layout: no whitespace except one optional space after each ':' and ',' (so both
// {"a":1,"b":[1,2]} and {"a": 1, "b": [1, 2]} match; no newlines, so the model cannot pad forever).
// Object properties come in the order the schema lists them (hence ordered_json, which keeps the
// text's order); the required ones must appear, the others may be left out; no other property
// appears.
// Strings are '"', characters other than '"', '\' and U+0000-U+001F or the escapes \" \\ \/ \b
// \f \n \r \t \uXXXX, then '"'.
//
// Supported keywords (anything else is refused, naming the keyword and its JSON pointer, e.g.
// "json_schema: keyword 'minimum' at /properties/age is not supported; ..."; annotations are
// ignored: title, description, default, examples, $schema, $id, $comment, deprecated, readOnly,
// writeOnly, and $defs / definitions, which only hold what $ref reaches):
//   type: a name or a list of names (a list is an alternation). Without type, the keywords present
//     choose it (properties -> object, items -> array, maxLength -> string, ...); none: any value.
//   enum, const: each value written in the layout above (objects with their keys in the order the
//     request writes them), next to type only (values of other types are dropped). Numbers are
//     matched as nlohmann writes them: 1 and 1.0 are different texts.
//   anyOf, oneOf (read as anyOf: exclusivity is not checked): an alternation; allOf with one member.
//   $ref to "#/$defs/..." or "#/definitions/..." in the same schema; a recursive one is refused.
//   $ref, anyOf, oneOf, allOf take no constraining sibling (the regex would need an intersection).
//   object: properties, required, additionalProperties. With properties, additionalProperties must
//     be false or absent. Without properties: additionalProperties false -> {}, a schema -> any
//     keys with values of that schema, true or absent -> any JSON object (values nested at most
//     kAnyJsonDepth - 1 levels). required must name listed properties.
//   array: items (a schema, or false), prefixItems (a tuple: the first items, each optional past
//     minItems), minItems, maxItems, uniqueItems false; the older tuple form items: [...] with
//     additionalItems. An array without items holds any values nested kAnyJsonDepth - 1 levels.
//   string: minLength, maxLength (characters, an escape counting as one; a \u surrogate pair as
//     two), unbounded without maxLength; pattern, inserted as the group (?:...) in place of the
//     content between the quotes, with a leading ^ and a trailing $ removed: it must be in the
//     dialect, match the whole content (not a substring, as JSON Schema reads it), and is taken
//     as written, not JSON-escaped (a pattern that allows '"', '\' or control characters can yield
//     invalid JSON); format date, time, date-time (RFC 3339; days are not checked per month),
//     uuid. pattern, format and the lengths are not combined with each other.
//   integer: -?(0|[1-9][0-9]{0,15}); number: that, then an optional fraction of 1-16 digits and
//     an optional exponent of 1-2 digits (bounded so that a model cannot emit digits forever, and
//     so that every number fits a double: 1e999 would overflow the client's parser);
//     minimum, maximum, multipleOf and the like are refused.
// Counts (minItems, maxLength, ...) above RegexLimits::max_repeat are refused.
// A value with no constraints ({} or true) is any JSON value nested at most kAnyJsonDepth deep.
// Refused as well: a false schema, nesting deeper than 32 schema levels, a regex over 64 KB.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

#include "engine/status.h"

namespace kvserve {

inline constexpr int kAnyJsonDepth = 2;

// Writes the regex to *regex, or returns InvalidArgument naming the keyword and where it is.
Status json_schema_to_regex(const nlohmann::ordered_json& schema, std::string* regex);

// A regex that matches exactly `text`: \ . * + ? ( ) [ ] { } | ^ $ / - get a backslash, control
// characters (and DEL) become \xHH, every other byte (UTF-8 included) stays as it is.
std::string regex_escape(std::string_view text);

}  // namespace kvserve
