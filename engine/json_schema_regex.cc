#include "engine/json_schema_regex.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/regex_dfa.h"

namespace kvserve {
namespace {

constexpr size_t kMaxRegexBytes = 64 * 1024;
constexpr int kMaxSchemaDepth = 32;
// Counts above this would be refused by the regex compiler with a message about the pattern's byte
// offset; refusing them here names the schema keyword instead.
constexpr int kMaxCount = RegexLimits{}.max_repeat;

// One character of a JSON string as written: anything but '"', '\' and control characters, or an
// escape. An escape counts as one character for minLength / maxLength.
constexpr std::string_view kStringChar = R"((?:[^"\\\x00-\x1F]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4}))";
// Digit counts are bounded so that a model cannot emit digits forever.
constexpr std::string_view kIntegerRegex = "-?(?:0|[1-9][0-9]{0,15})";
constexpr std::string_view kFractionAndExponent = R"((?:\.[0-9]{1,16})?(?:[eE][+\-]?[0-9]{1,2})?)";
// RFC 3339 full-date and full-time (a leap second is allowed; days are not checked per month).
constexpr std::string_view kDateRegex = R"([0-9]{4}\-(?:0[1-9]|1[0-2])\-(?:0[1-9]|[12][0-9]|3[01]))";
constexpr std::string_view kTimeRegex =
    R"((?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)(?:\.[0-9]{1,9})?(?:[Zz]|[+\-](?:[01][0-9]|2[0-3]):[0-5][0-9]))";
constexpr std::string_view kUuidRegex =
    R"([0-9a-fA-F]{8}\-[0-9a-fA-F]{4}\-[0-9a-fA-F]{4}\-[0-9a-fA-F]{4}\-[0-9a-fA-F]{12})";

// Keywords that do not constrain instances; $defs and definitions only hold schemas that $ref reaches.
const std::set<std::string, std::less<>> kIgnoredKeywords = {
    "title",    "description", "default",     "examples",   "$schema",  "$id",
    "$comment", "$defs",       "definitions", "deprecated", "readOnly", "writeOnly"};
const std::set<std::string, std::less<>> kSupportedKeywords = {
    "type",        "enum",        "const",           "anyOf",    "oneOf",
    "allOf",       "$ref",        "properties",      "required", "additionalProperties",
    "items",       "prefixItems", "additionalItems", "minItems", "maxItems",
    "uniqueItems", "minLength",   "maxLength",       "pattern",  "format"};
const std::set<std::string, std::less<>> kObjectKeywords = {"properties", "required", "additionalProperties"};
const std::set<std::string, std::less<>> kArrayKeywords = {"items",    "prefixItems", "additionalItems",
                                                           "minItems", "maxItems",    "uniqueItems"};
const std::set<std::string, std::less<>> kStringKeywords = {"minLength", "maxLength", "pattern", "format"};
const std::vector<std::string> kTypeNames = {"object", "array",   "string", "integer",
                                             "number", "boolean", "null"};

std::string where(const std::string& pointer) {
  return pointer.empty() ? "the root" : pointer;
}

std::string pointer_token(std::string_view key) {
  std::string token;
  for (const char c : key) {
    if (c == '~') {
      token += "~0";
    } else if (c == '/') {
      token += "~1";
    } else {
      token += c;
    }
  }
  return token;
}

std::string child_pointer(const std::string& pointer, std::string_view key) {
  return pointer + "/" + pointer_token(key);
}

Status error(const std::string& msg) {
  return Status::InvalidArgument("json_schema: " + msg);
}

Status unsupported_keyword(std::string_view keyword, const std::string& pointer) {
  std::string hint;
  if (keyword == "minimum" || keyword == "maximum" || keyword == "exclusiveMinimum" ||
      keyword == "exclusiveMaximum" || keyword == "multipleOf") {
    hint =
        "numeric bounds cannot be enforced while the digits are generated; remove it and check the value "
        "after generation";
  } else {
    hint =
        "remove it or check it after generation (supported: type, enum, const, anyOf, oneOf, allOf with one "
        "member, $ref, properties, required, additionalProperties false, items, prefixItems, minItems, "
        "maxItems, minLength, maxLength, pattern, format)";
  }
  return error("keyword '" + std::string(keyword) + "' at " + where(pointer) + " is not supported; " + hint);
}

// True when `re` is one group "(?:...)" whose closing parenthesis is the last character, so that a
// quantifier may follow it directly.
bool is_single_group(std::string_view re) {
  if (re.size() < 4 || re.substr(0, 3) != "(?:" || re.back() != ')') return false;
  int open = 0;
  bool in_class = false;
  for (size_t i = 0; i < re.size(); ++i) {
    const char c = re[i];
    if (c == '\\') {
      ++i;
    } else if (in_class) {
      if (c == ']') in_class = false;
    } else if (c == '[') {
      in_class = true;
      // A ']' right after '[' or '[^' is a literal in PCRE; our own fragments never start a class so.
    } else if (c == '(') {
      ++open;
    } else if (c == ')') {
      if (--open == 0) return i + 1 == re.size();
    }
  }
  return false;
}

std::string as_atom(std::string_view re) {
  if (is_single_group(re)) return std::string(re);
  return "(?:" + std::string(re) + ")";
}

// `re` repeated between `min` and `max` times (max < 0: unbounded). Empty when max == 0.
std::string repeat(std::string_view re, int min, int max) {
  if (max == 0) return "";
  if (min == 1 && max == 1) return std::string(re);
  std::string quantifier;
  if (max < 0) {
    quantifier = min == 0 ? "*" : min == 1 ? "+" : "{" + std::to_string(min) + ",}";
  } else if (min == 0 && max == 1) {
    quantifier = "?";
  } else if (min == max) {
    quantifier = "{" + std::to_string(min) + "}";
  } else {
    quantifier = "{" + std::to_string(min) + "," + std::to_string(max) + "}";
  }
  return as_atom(re) + quantifier;
}

// Alternatives joined by '|' inside one group, so the result can be concatenated and quantified.
std::string alternation(const std::vector<std::string>& alternatives) {
  if (alternatives.size() == 1) return alternatives[0];
  std::string re = "(?:";
  for (size_t i = 0; i < alternatives.size(); ++i) {
    if (i > 0) re += '|';
    re += alternatives[i];
  }
  return re + ")";
}

std::string string_regex(int min_length, int max_length) {
  return "\"" + repeat(kStringChar, min_length, max_length) + "\"";
}

std::string number_regex() {
  return std::string(kIntegerRegex) + std::string(kFractionAndExponent);
}

std::string separator() {
  return ", ?";
}
std::string colon() {
  return ": ?";
}

// Any JSON value, with arrays and objects nested at most `depth` levels (0: scalars only).
std::string any_value_regex(int depth);

std::string any_array_regex(int member_depth) {
  const std::string member = any_value_regex(member_depth);
  return R"(\[(?:)" + member + "(?:" + separator() + member + R"()*)?\])";
}

std::string any_object_regex(int member_depth) {
  const std::string member = string_regex(0, -1) + colon() + any_value_regex(member_depth);
  return R"(\{(?:)" + member + "(?:" + separator() + member + R"()*)?\})";
}

std::string any_value_regex(int depth) {
  std::vector<std::string> alternatives = {string_regex(0, -1), number_regex(), "true", "false", "null"};
  if (depth > 0) {
    alternatives.push_back(any_array_regex(depth - 1));
    alternatives.push_back(any_object_regex(depth - 1));
  }
  return alternation(alternatives);
}

// The regex of one JSON value written in the layout: no whitespace but an optional space after
// ':' and ','; object keys in the order the json type keeps them. False when the value nests more
// than `depth_left` levels (the recursion is bounded since the value comes from a request).
template <typename Json>
bool literal_regex(const Json& value, int depth_left, std::string* re) {
  if (depth_left < 0) return false;
  if (value.is_object()) {
    *re += R"(\{)";
    bool first = true;
    for (const auto& [key, member] : value.items()) {
      if (!first) *re += separator();
      first = false;
      *re += regex_escape(Json(key).dump()) + colon();
      if (!literal_regex(member, depth_left - 1, re)) return false;
    }
    *re += R"(\})";
  } else if (value.is_array()) {
    *re += R"(\[)";
    for (size_t i = 0; i < value.size(); ++i) {
      if (i > 0) *re += separator();
      if (!literal_regex(value[i], depth_left - 1, re)) return false;
    }
    *re += R"(\])";
  } else {
    *re += regex_escape(value.dump());
  }
  return true;
}

// Checks that `pattern` stays inside the group it is put in: parentheses outside classes balanced,
// no trailing lone backslash, no class opening with ']' (a literal in PCRE, an empty class in
// ECMAScript). Otherwise "a)|(b" would let the whole regex match text outside the string.
bool pattern_stays_in_group(std::string_view pattern) {
  int open = 0;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\') {
      if (++i == pattern.size()) return false;
    } else if (in_class) {
      if (c == ']') in_class = false;
    } else if (c == '[') {
      in_class = true;
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') ++i;
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') return false;
    } else if (c == '(') {
      ++open;
    } else if (c == ')') {
      if (--open < 0) return false;
    }
  }
  return open == 0 && !in_class;
}

template <typename Json>
bool has_type(const Json& value, std::string_view type) {
  if (type == "object") return value.is_object();
  if (type == "array") return value.is_array();
  if (type == "string") return value.is_string();
  if (type == "boolean") return value.is_boolean();
  if (type == "null") return value.is_null();
  if (type == "number") return value.is_number();
  // integer: as JSON Schema reads it, 2.0 is an integer too (written as nlohmann writes it).
  if (value.is_number_integer()) return true;
  if (!value.is_number_float()) return false;
  const double d = value.template get<double>();
  return std::isfinite(d) && std::floor(d) == d;
}

// Removes a leading '^' and a trailing unescaped '$': the pattern is matched against the whole
// string content anyway.
std::string strip_anchors(std::string pattern) {
  if (!pattern.empty() && pattern.front() == '^') pattern.erase(0, 1);
  if (!pattern.empty() && pattern.back() == '$') {
    size_t backslashes = 0;
    for (size_t i = pattern.size() - 1; i > 0 && pattern[i - 1] == '\\'; --i)
      ++backslashes;
    if (backslashes % 2 == 0) pattern.pop_back();
  }
  return pattern;
}

template <typename Json>
class SchemaConverter {
 public:
  explicit SchemaConverter(const Json& root) : root_(root) {}

  Status convert(const Json& schema, const std::string& pointer, int depth, std::string* out) {
    if (depth > kMaxSchemaDepth) {
      return error("the schema at " + where(pointer) + " nests deeper than " +
                   std::to_string(kMaxSchemaDepth) + " levels; flatten it");
    }
    Status status = convert_node(schema, pointer, depth, out);
    if (status.ok() && out->size() > kMaxRegexBytes) return too_big(pointer);
    return status;
  }

 private:
  static Status too_big(const std::string& pointer) {
    return error("the regex for the schema at " + where(pointer) + " would be longer than " +
                 std::to_string(kMaxRegexBytes) +
                 " bytes; simplify the schema (fewer optional properties, smaller enums, lower counts)");
  }

  Status convert_node(const Json& schema, const std::string& pointer, int depth, std::string* out) {
    if (schema.is_boolean()) {
      if (!schema.template get<bool>()) {
        return error("the schema at " + where(pointer) + " is false: no value matches it");
      }
      *out = any_value_regex(kAnyJsonDepth);
      return Status::Ok();
    }
    if (!schema.is_object()) {
      return error("the schema at " + where(pointer) + " must be an object or a boolean, not " +
                   std::string(schema.type_name()));
    }
    std::vector<std::string> constraining;  // the keywords that constrain, in schema order
    for (const auto& [keyword, value] : schema.items()) {
      if (kIgnoredKeywords.count(keyword) != 0) continue;
      if (kSupportedKeywords.count(keyword) == 0) return unsupported_keyword(keyword, pointer);
      if (keyword == "uniqueItems") {
        if (!value.is_boolean()) return error("'uniqueItems' at " + where(pointer) + " must be a boolean");
        if (value.template get<bool>()) return unsupported_keyword("uniqueItems", pointer);
        continue;  // false constrains nothing
      }
      constraining.push_back(keyword);
    }
    const auto has = [&](std::string_view keyword) { return schema.contains(keyword); };

    // Composition keywords stand alone: combining them with siblings would need an intersection of
    // regexes, which the dialect cannot express.
    for (const std::string_view alone : {"$ref", "anyOf", "oneOf", "allOf"}) {
      if (!has(alone)) continue;
      for (const std::string& other : constraining) {
        if (other != alone) return not_together(other, alone, pointer);
      }
    }
    if (has("$ref")) return convert_ref(schema["$ref"], pointer, depth, out);
    if (has("anyOf")) {
      return convert_alternatives(schema["anyOf"], child_pointer(pointer, "anyOf"), depth, out);
    }
    if (has("oneOf")) {
      return convert_alternatives(schema["oneOf"], child_pointer(pointer, "oneOf"), depth, out);
    }
    if (has("allOf")) {
      const Json& members = schema["allOf"];
      if (!members.is_array() || members.size() != 1) {
        return error("'allOf' at " + where(pointer) +
                     " is supported with exactly one member; merge the members into one schema");
      }
      return convert(members[0], child_pointer(pointer, "allOf") + "/0", depth + 1, out);
    }

    std::vector<std::string> types;
    if (has("type")) {
      Status status = read_types(schema["type"], pointer, &types);
      if (!status.ok()) return status;
    }
    if (has("enum") || has("const")) {
      for (const std::string& other : constraining) {
        if (other != "enum" && other != "const" && other != "type") {
          return not_together(other, has("enum") ? "enum" : "const", pointer);
        }
      }
      return convert_enum(schema, pointer, types, out);
    }
    if (!has("type")) {
      // Without a type, the keywords present say which types are meant; none: any value.
      const auto uses = [&](const std::set<std::string, std::less<>>& keywords) {
        return std::any_of(constraining.begin(), constraining.end(),
                           [&](const std::string& k) { return keywords.count(k) != 0; });
      };
      if (uses(kObjectKeywords)) types.push_back("object");
      if (uses(kArrayKeywords)) types.push_back("array");
      if (uses(kStringKeywords)) types.push_back("string");
      if (types.empty()) {
        *out = any_value_regex(kAnyJsonDepth);
        return Status::Ok();
      }
    }
    std::vector<std::string> alternatives;
    for (const std::string& type : types) {
      std::string re;
      Status status = convert_type(schema, type, pointer, depth, &re);
      if (!status.ok()) return status;
      alternatives.push_back(std::move(re));
    }
    *out = alternation(alternatives);
    return Status::Ok();
  }

  // A keyword next to one it cannot be combined with: the regex would need the intersection of two
  // languages, which the dialect cannot spell.
  static Status not_together(std::string_view keyword, std::string_view with, const std::string& pointer) {
    std::string hint;
    if (with == "$ref") {
      hint = "move it into the referenced schema";
    } else if (with == "anyOf" || with == "oneOf") {
      hint = "move it into each alternative";
    } else if (with == "allOf") {
      hint = "merge it and the allOf member into one schema";
    } else if (with == "enum" || with == "const") {
      hint = "list only the values it allows";
    } else {
      hint = "keep one of the two";
    }
    return error("keyword '" + std::string(keyword) + "' next to '" + std::string(with) + "' at " +
                 where(pointer) + " is not supported; " + hint);
  }

  static Status read_types(const Json& type, const std::string& pointer, std::vector<std::string>* types) {
    const auto bad = [&] {
      return error(
          "'type' at " + where(pointer) +
          " must be one of object, array, string, integer, number, boolean, null, or a list of them");
    };
    std::vector<const Json*> names;  // pointed to: a request's value may nest too deep to copy
    if (type.is_array()) {
      for (const Json& name : type)
        names.push_back(&name);
      if (names.empty()) return bad();
    } else {
      names.push_back(&type);
    }
    for (const Json* name : names) {
      if (!name->is_string()) return bad();
      const std::string s = name->template get<std::string>();
      if (std::find(kTypeNames.begin(), kTypeNames.end(), s) == kTypeNames.end()) return bad();
      if (std::find(types->begin(), types->end(), s) == types->end()) types->push_back(s);
    }
    return Status::Ok();
  }

  Status convert_alternatives(const Json& members, const std::string& pointer, int depth, std::string* out) {
    if (!members.is_array() || members.empty()) {
      return error("'" + pointer.substr(pointer.rfind('/') + 1) + "' at " + where(pointer) +
                   " must be a non-empty array of schemas");
    }
    std::vector<std::string> alternatives;
    size_t total = 0;
    for (size_t i = 0; i < members.size(); ++i) {
      std::string re;
      Status status = convert(members[i], pointer + "/" + std::to_string(i), depth + 1, &re);
      if (!status.ok()) return status;
      total += re.size() + 1;
      if (total > kMaxRegexBytes) return too_big(pointer);
      alternatives.push_back(std::move(re));
    }
    *out = alternation(alternatives);
    return Status::Ok();
  }

  Status convert_ref(const Json& ref, const std::string& pointer, int depth, std::string* out) {
    const std::string at = where(pointer);
    if (!ref.is_string()) return error("'$ref' at " + at + " must be a string");
    const std::string target = ref.template get<std::string>();
    if (target.rfind("#/$defs/", 0) != 0 && target.rfind("#/definitions/", 0) != 0) {
      return error(
          "$ref '" + target + "' at " + at +
          " is not supported; only references to '#/$defs/...' or '#/definitions/...' in the same schema "
          "are");
    }
    const std::string target_pointer = target.substr(1);
    if (std::find(expanding_.begin(), expanding_.end(), target_pointer) != expanding_.end()) {
      return error("$ref '" + target + "' at " + at + " is recursive (it is reached again inside " + target +
                   "); recursive schemas are not supported: unroll them to a fixed depth");
    }
    const Json* node = &root_;
    size_t pos = 1;  // past the leading '/'
    while (pos <= target_pointer.size()) {
      const size_t end = std::min(target_pointer.find('/', pos), target_pointer.size());
      std::string key;
      for (size_t i = pos; i < end; ++i) {
        if (target_pointer[i] == '~' && i + 1 < end &&
            (target_pointer[i + 1] == '0' || target_pointer[i + 1] == '1')) {
          key += target_pointer[i + 1] == '0' ? '~' : '/';
          ++i;
        } else {
          key += target_pointer[i];
        }
      }
      if (!node->is_object() || !node->contains(key)) {
        return error("$ref '" + target + "' at " + at + " points to nothing in the schema");
      }
      node = &(*node)[key];
      pos = end + 1;
    }
    // Each target is converted once per depth. Converted again wherever it is referenced, a target
    // whose regex is short but whose conversion is not (an enum whose values the type drops or that
    // repeat) cost its work once per reference, up to thousands of times, and references of
    // references multiplied that. Keyed by depth too, so that the depth limit refuses exactly what
    // it did before; at most one regex per depth and target is kept, each part of the result.
    const auto key = std::make_pair(target_pointer, depth);
    if (const auto it = converted_refs_.find(key); it != converted_refs_.end()) {
      *out = it->second;
      return Status::Ok();
    }
    expanding_.push_back(target_pointer);
    Status status = convert(*node, target_pointer, depth + 1, out);
    expanding_.pop_back();
    if (status.ok()) converted_refs_.emplace(key, *out);
    return status;
  }

  Status convert_enum(const Json& schema, const std::string& pointer, const std::vector<std::string>& types,
                      std::string* out) {
    // The values are pointed to, not copied: copying or comparing a json value recurses, and a
    // request's value may nest arbitrarily deep; literal_regex bounds the depth before comparing.
    const bool has_enum = schema.contains("enum");
    const Json* constant = schema.contains("const") ? &schema["const"] : nullptr;
    std::vector<const Json*> values;
    if (has_enum) {
      const Json& list = schema["enum"];
      if (!list.is_array() || list.empty()) {
        return error("'enum' at " + where(pointer) + " must be a non-empty array");
      }
      for (const Json& value : list)
        values.push_back(&value);
    } else {
      values.push_back(constant);
    }
    const auto too_deep = [&] {
      return error("a value of 'enum' / 'const' at " + where(pointer) + " nests deeper than " +
                   std::to_string(kMaxSchemaDepth) + " levels");
    };
    std::string unused;
    if (has_enum && constant != nullptr && !literal_regex(*constant, kMaxSchemaDepth, &unused))
      return too_deep();
    std::vector<std::string> alternatives;
    size_t total = 0;
    for (const Json* value : values) {
      std::string re;
      if (!literal_regex(*value, kMaxSchemaDepth, &re)) return too_deep();
      // enum and const together: the enum's values equal to the const.
      if (has_enum && constant != nullptr && *value != *constant) continue;
      if (!types.empty() && std::none_of(types.begin(), types.end(),
                                         [&](const std::string& t) { return has_type(*value, t); })) {
        continue;
      }
      if (std::find(alternatives.begin(), alternatives.end(), re) != alternatives.end()) continue;
      total += re.size() + 1;
      if (total > kMaxRegexBytes) return too_big(pointer);
      alternatives.push_back(std::move(re));
    }
    if (alternatives.empty()) {
      return error("no value of 'enum' / 'const' at " + where(pointer) + " satisfies the rest of the schema");
    }
    *out = alternation(alternatives);
    return Status::Ok();
  }

  // A non-negative count keyword (minItems, maxLength, ...); `value` keeps its default when absent.
  static Status read_count(const Json& schema, const std::string& keyword, const std::string& pointer,
                           int* value) {
    if (!schema.contains(keyword)) return Status::Ok();
    const Json& count = schema[keyword];
    if (!has_type(count, "integer")) {
      return error("'" + keyword + "' at " + where(pointer) + " must be a non-negative integer");
    }
    const double d = count.template get<double>();
    if (d < 0) return error("'" + keyword + "' at " + where(pointer) + " must be a non-negative integer");
    if (d > kMaxCount) {
      return error("'" + keyword + "' at " + where(pointer) + " is above " + std::to_string(kMaxCount) +
                   ", the largest count supported");
    }
    *value = static_cast<int>(d);
    return Status::Ok();
  }

  Status convert_type(const Json& schema, const std::string& type, const std::string& pointer, int depth,
                      std::string* out) {
    if (type == "object") return convert_object(schema, pointer, depth, out);
    if (type == "array") return convert_array(schema, pointer, depth, out);
    if (type == "string") return convert_string(schema, pointer, out);
    if (type == "integer") {
      *out = std::string(kIntegerRegex);
    } else if (type == "number") {
      *out = number_regex();
    } else if (type == "boolean") {
      *out = "(?:true|false)";
    } else {
      *out = "null";
    }
    return Status::Ok();
  }

  Status convert_string(const Json& schema, const std::string& pointer, std::string* out) {
    int min_length = 0;
    int max_length = -1;
    Status status = read_count(schema, "minLength", pointer, &min_length);
    if (status.ok()) status = read_count(schema, "maxLength", pointer, &max_length);
    if (!status.ok()) return status;
    if (max_length >= 0 && min_length > max_length) {
      return error("'minLength' at " + where(pointer) + " is above 'maxLength': no string matches");
    }
    const bool has_length = schema.contains("minLength") || schema.contains("maxLength");
    if (schema.contains("format")) {
      if (schema.contains("pattern")) return not_together("pattern", "format", pointer);
      if (has_length) {
        return not_together(schema.contains("minLength") ? "minLength" : "maxLength", "format", pointer);
      }
      const Json& format = schema["format"];
      if (!format.is_string()) return error("'format' at " + where(pointer) + " must be a string");
      const std::string name = format.template get<std::string>();
      std::string content;
      if (name == "date") {
        content = kDateRegex;
      } else if (name == "time") {
        content = kTimeRegex;
      } else if (name == "date-time") {
        content = std::string(kDateRegex) + "[Tt]" + std::string(kTimeRegex);
      } else if (name == "uuid") {
        content = kUuidRegex;
      } else {
        return error("format '" + name + "' at " + where(pointer) +
                     " is not supported; supported formats: date, time, date-time, uuid (or give a pattern)");
      }
      *out = "\"" + content + "\"";
      return Status::Ok();
    }
    if (schema.contains("pattern")) {
      if (has_length) {
        return not_together(schema.contains("minLength") ? "minLength" : "maxLength", "pattern", pointer);
      }
      const Json& pattern = schema["pattern"];
      if (!pattern.is_string()) return error("'pattern' at " + where(pointer) + " must be a string");
      const std::string content = strip_anchors(pattern.template get<std::string>());
      if (!pattern_stays_in_group(content)) {
        return error("'pattern' at " + where(pointer) +
                     " has an unbalanced parenthesis or bracket, or ends with a backslash");
      }
      *out = content.empty() ? "\"\"" : "\"(?:" + content + ")\"";
      return Status::Ok();
    }
    *out = string_regex(min_length, max_length);
    return Status::Ok();
  }

  Status convert_object(const Json& schema, const std::string& pointer, int depth, std::string* out) {
    const Json* additional =
        schema.contains("additionalProperties") ? &schema["additionalProperties"] : nullptr;
    const bool additional_false =
        additional != nullptr && additional->is_boolean() && !additional->template get<bool>();
    std::set<std::string> required;
    if (schema.contains("required")) {
      const Json& list = schema["required"];
      const auto bad = [&] {
        return error("'required' at " + where(pointer) + " must be an array of strings");
      };
      if (!list.is_array()) return bad();
      for (const Json& name : list) {
        if (!name.is_string()) return bad();
        required.insert(name.template get<std::string>());
      }
    }
    if (!schema.contains("properties")) {
      if (!required.empty()) {
        return error("'required' at " + where(pointer) +
                     " needs 'properties' listing the required properties (additional properties are not "
                     "generated)");
      }
      if (additional_false) {
        *out = R"(\{\})";
      } else if (additional == nullptr || additional->is_boolean()) {
        *out = any_object_regex(kAnyJsonDepth - 1);
      } else {
        // A map: any keys, every value an instance of additionalProperties.
        std::string value;
        Status status =
            convert(*additional, child_pointer(pointer, "additionalProperties"), depth + 1, &value);
        if (!status.ok()) return status;
        const std::string member = string_regex(0, -1) + colon() + value;
        *out = R"(\{(?:)" + member + "(?:" + separator() + member + R"()*)?\})";
      }
      return Status::Ok();
    }
    if (additional != nullptr && !additional_false) {
      return error("keyword 'additionalProperties' at " + where(pointer) +
                   ": additionalProperties other than false is not supported with properties; remove it or "
                   "list every property");
    }
    const Json& properties = schema["properties"];
    if (!properties.is_object()) return error("'properties' at " + where(pointer) + " must be an object");
    for (const std::string& name : required) {
      if (!properties.contains(name)) {
        return error("required property '" + name + "' at " + where(pointer) +
                     " is not listed in 'properties' (additional properties are not generated)");
      }
    }
    std::vector<std::string> members;  // "key": value
    std::vector<bool> is_required;
    size_t total = 0;  // each member appears at least once in the regex
    const std::string properties_pointer = child_pointer(pointer, "properties");
    for (const auto& [name, property] : properties.items()) {
      std::string value;
      Status status = convert(property, child_pointer(properties_pointer, name), depth + 1, &value);
      if (!status.ok()) return status;
      members.push_back(regex_escape(Json(name).dump()) + colon() + value);
      total += members.back().size();
      if (total > kMaxRegexBytes) return too_big(pointer);
      is_required.push_back(required.count(name) != 0);
    }
    *out = R"(\{)" + object_members_regex(members, is_required) + R"(\})";
    return Status::Ok();
  }

  // The members in order, each required one present, each optional one present or not, with a
  // comma before each present member but the first. Built left to right: while every member so far
  // is optional, `re` spells a non-empty selection of them, so the next optional member o makes it
  // (?:re(?:, ?o)?|o) and a required member r makes it (?:re, ?)?r; once a required member is in,
  // each later member just brings its comma. Every member appears at most twice: the size is
  // linear in the number of properties, not exponential.
  static std::string object_members_regex(const std::vector<std::string>& members,
                                          const std::vector<bool>& is_required) {
    std::string re;
    bool all_optional = true;
    for (size_t i = 0; i < members.size(); ++i) {
      const std::string& member = members[i];
      if (!all_optional) {
        re += is_required[i] ? separator() + member : "(?:" + separator() + member + ")?";
      } else if (is_required[i]) {
        re = re.empty() ? member : "(?:" + re + separator() + ")?" + member;
        all_optional = false;
      } else {
        re = re.empty() ? member : "(?:" + re + "(?:" + separator() + member + ")?|" + member + ")";
      }
    }
    // Only optional members: the object may be empty.
    if (all_optional && !re.empty()) re = as_atom(re) + "?";
    return re;
  }

  Status convert_array(const Json& schema, const std::string& pointer, int depth, std::string* out) {
    int min_items = 0;
    int max_items = -1;
    Status status = read_count(schema, "minItems", pointer, &min_items);
    if (status.ok()) status = read_count(schema, "maxItems", pointer, &max_items);
    if (!status.ok()) return status;
    if (max_items >= 0 && min_items > max_items) {
      return error("'minItems' at " + where(pointer) + " is above 'maxItems': no array matches");
    }
    // The tuple part: prefixItems (2020-12), or items as an array with additionalItems (drafts 4-2019).
    const Json* prefix = nullptr;
    std::string prefix_keyword;
    std::string rest_keyword;    // the keyword with the schema of the items after the tuple
    const Json* rest = nullptr;  // nullptr: any value
    if (schema.contains("prefixItems")) {
      prefix = &schema["prefixItems"];
      prefix_keyword = "prefixItems";
      if (schema.contains("additionalItems")) return unsupported_keyword("additionalItems", pointer);
      rest_keyword = "items";
    } else if (schema.contains("items") && schema["items"].is_array()) {
      prefix = &schema["items"];
      prefix_keyword = "items";
      rest_keyword = "additionalItems";
    } else {
      if (schema.contains("additionalItems")) return unsupported_keyword("additionalItems", pointer);
      rest_keyword = "items";
    }
    if (schema.contains(rest_keyword)) rest = &schema[rest_keyword];
    std::vector<std::string> tuple;
    size_t tuple_bytes = 0;  // checked as the items come: a huge tuple must not be held first
    if (prefix != nullptr) {
      if (!prefix->is_array()) {
        return error("'" + prefix_keyword + "' at " + where(pointer) + " must be an array");
      }
      const std::string prefix_pointer = child_pointer(pointer, prefix_keyword);
      for (size_t i = 0; i < prefix->size(); ++i) {
        // Items past maxItems never appear (and their schemas need not be supported).
        if (max_items >= 0 && static_cast<int>(i) >= max_items) break;
        std::string re;
        status = convert((*prefix)[i], prefix_pointer + "/" + std::to_string(i), depth + 1, &re);
        if (!status.ok()) return status;
        tuple_bytes += re.size();
        if (tuple_bytes > kMaxRegexBytes) return too_big(pointer);
        tuple.push_back(std::move(re));
      }
    }
    const bool rest_allowed = !(rest != nullptr && rest->is_boolean() && !rest->template get<bool>());
    const int k = static_cast<int>(tuple.size());
    std::string rest_item;
    // Like tuple items past maxItems, the items after the tuple are converted only when one can
    // appear: every regex converted is then part of the result, so that the 64 KB cap on it bounds
    // the work and memory of the whole conversion (a regex dropped here escaped the cap, and with
    // $ref the same subschema could be converted 10^10 times under maxItems 0).
    if (rest_allowed && (max_items < 0 || max_items > k)) {
      if (rest == nullptr || rest->is_boolean()) {
        rest_item = any_value_regex(kAnyJsonDepth - 1);
      } else {
        status = convert(*rest, child_pointer(pointer, rest_keyword), depth + 1, &rest_item);
        if (!status.ok()) return status;
      }
    }
    if (!rest_allowed && min_items > k) {
      return error("'minItems' at " + where(pointer) + " asks for more items than '" + prefix_keyword +
                   "' allows: no array matches");
    }
    // Items after the tuple, each with its leading comma.
    std::string tail;
    if (rest_allowed) {
      const int rest_min = std::max(0, min_items - k);
      const int rest_max = max_items < 0 ? -1 : std::max(0, max_items - k);
      if (k == 0) {
        // The first item has no comma.
        if (rest_max == 0) {
          *out = R"(\[\])";
          return Status::Ok();
        }
        const std::string items = rest_item + repeat(separator() + rest_item, std::max(0, rest_min - 1),
                                                     rest_max < 0 ? -1 : rest_max - 1);
        *out = R"(\[)" + (rest_min == 0 ? as_atom(items) + "?" : items) + R"(\])";
        if (out->size() > kMaxRegexBytes) return too_big(pointer);
        return Status::Ok();
      }
      tail = repeat(separator() + rest_item, rest_min, rest_max);
    } else if (k == 0) {
      *out = R"(\[\])";
      return Status::Ok();
    }
    // Tuple items nest: item i may only appear after item i - 1, and is optional when i >= minItems.
    for (int i = k - 1; i >= 0; --i) {
      const std::string item = (i == 0 ? "" : separator()) + tuple[static_cast<size_t>(i)] + tail;
      tail = i >= min_items ? as_atom(item) + "?" : item;
      if (tail.size() > kMaxRegexBytes) return too_big(pointer);
    }
    *out = R"(\[)" + tail + R"(\])";
    return Status::Ok();
  }

  const Json& root_;
  std::vector<std::string> expanding_;  // the $ref targets being converted, outermost first
  std::map<std::pair<std::string, int>, std::string> converted_refs_;  // (target, depth) -> its regex
};

template <typename Json>
Status convert_schema(const Json& schema, std::string* regex) {
  try {
    SchemaConverter<Json> converter(schema);
    std::string re;
    Status status = converter.convert(schema, "", 0, &re);
    if (!status.ok()) return status;
    *regex = std::move(re);
    return Status::Ok();
  } catch (const nlohmann::json::exception& e) {
    // Invalid UTF-8 in a name or value the regex spells out.
    return Status::InvalidArgument(std::string("json_schema: ") + e.what());
  }
}

}  // namespace

Status json_schema_to_regex(const nlohmann::ordered_json& schema, std::string* regex) {
  return convert_schema(schema, regex);
}

std::string regex_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7F) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02X", byte);
      out += hex;
    } else if (std::string_view(R"(\.*+?()[]{}|^$/-)").find(c) != std::string_view::npos) {
      out += '\\';
      out += c;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace kvserve
