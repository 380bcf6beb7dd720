// json_schema_to_regex against an independent reference: PCRE2 (full match, UTF mode) runs each
// schema's regex on hand-written valid and invalid instances, and on seeded random instances of
// the schema written compact, spaced and mixed; refusals must name the keyword and its JSON
// pointer; regex_escape must round-trip. Then the regexes through RegexDfa, which must agree with
// PCRE2.
#include "engine/json_schema_regex.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/regex_dfa.h"
#include "tests/engine/pcre2_reference.h"

namespace kvserve {
namespace {

using Json = nlohmann::ordered_json;
using testing::Pcre2Reference;

std::string to_regex(const Json& schema) {
  std::string regex;
  const Status status = json_schema_to_regex(schema, &regex);
  EXPECT_TRUE(status.ok()) << status.message() << "\nschema: " << schema.dump();
  return regex;
}

// Compiles the schema's regex with PCRE2; a failure is reported (and the result matches nothing).
std::unique_ptr<Pcre2Reference> compile_schema(const Json& schema) {
  auto pcre = std::make_unique<Pcre2Reference>(to_regex(schema), Pcre2Reference::utf());
  EXPECT_TRUE(pcre->ok()) << pcre->error() << "\nschema: " << schema.dump();
  return pcre;
}

std::string error_of(const Json& schema) {
  std::string regex = "untouched";
  const Status status = json_schema_to_regex(schema, &regex);
  EXPECT_FALSE(status.ok()) << "accepted: " << schema.dump() << "\nregex: " << regex;
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(regex, "untouched");
  return status.message();
}

// ---- Serializing instances in the layouts the regex must accept.

enum class Spacing { kCompact, kSpaced, kRandom };

std::string serialize(const Json& value, Spacing spacing, std::mt19937* rng) {
  const auto space = [&] {
    if (spacing == Spacing::kCompact) return "";
    if (spacing == Spacing::kSpaced) return " ";
    return (*rng)() % 2 == 0 ? "" : " ";
  };
  if (value.is_object()) {
    std::string out = "{";
    bool first = true;
    for (const auto& [key, member] : value.items()) {
      if (!first) out += std::string(",") + space();
      first = false;
      out += Json(key).dump() + ":" + space() + serialize(member, spacing, rng);
    }
    return out + "}";
  }
  if (value.is_array()) {
    std::string out = "[";
    for (size_t i = 0; i < value.size(); ++i) {
      if (i > 0) out += std::string(",") + space();
      out += serialize(value[i], spacing, rng);
    }
    return out + "]";
  }
  return value.dump();
}

std::string spaced(const Json& value) {
  return serialize(value, Spacing::kSpaced, nullptr);
}

// ---- A small generator of random instances of the schemas used here.

class InstanceGenerator {
 public:
  InstanceGenerator(const Json& root, uint32_t seed) : root_(root), rng_(seed) {}

  std::mt19937& rng() { return rng_; }

  Json generate(const Json& schema) {
    if (schema.is_boolean()) return any_value(kAnyJsonDepth);
    if (schema.contains("$ref")) {
      return generate(root_.at(Json::json_pointer(schema["$ref"].get<std::string>().substr(1))));
    }
    for (const char* alternatives : {"anyOf", "oneOf"}) {
      if (schema.contains(alternatives)) return generate(pick(schema[alternatives]));
    }
    if (schema.contains("allOf")) return generate(schema["allOf"][0]);
    if (schema.contains("const")) return schema["const"];
    if (schema.contains("enum")) return pick(schema["enum"]);
    if (!schema.contains("type")) {
      if (schema.contains("properties") || schema.contains("additionalProperties")) return object(schema);
      if (schema.contains("items") || schema.contains("prefixItems")) return array(schema);
      return any_value(kAnyJsonDepth);
    }
    const Json& type = schema["type"].is_array() ? pick(schema["type"]) : schema["type"];
    if (type == "object") return object(schema);
    if (type == "array") return array(schema);
    if (type == "string") return string(schema);
    if (type == "integer") return integer();
    if (type == "number") return number();
    if (type == "boolean") return Json(uniform(0, 1) == 1);
    return Json(nullptr);
  }

 private:
  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  const Json& pick(const Json& list) {
    return list[static_cast<size_t>(uniform(0, static_cast<int>(list.size()) - 1))];
  }

  Json object(const Json& schema) {
    Json out = Json::object();
    if (!schema.contains("properties")) {
      const Json* additional =
          schema.contains("additionalProperties") ? &schema["additionalProperties"] : nullptr;
      if (additional != nullptr && additional->is_boolean() && !additional->get<bool>()) return out;
      const int n = uniform(0, 3);
      for (int i = 0; i < n; ++i) {
        const Json value = additional != nullptr && additional->is_object() ? generate(*additional)
                                                                            : any_value(kAnyJsonDepth - 1);
        out[random_text(0, 4)] = value;
      }
      return out;
    }
    const Json required = schema.value("required", Json::array());
    for (const auto& [name, property] : schema["properties"].items()) {
      const bool is_required = std::find(required.begin(), required.end(), Json(name)) != required.end();
      if (is_required || uniform(0, 1) == 1) out[name] = generate(property);
    }
    return out;
  }

  Json array(const Json& schema) {
    const int min_items = schema.value("minItems", 0);
    const Json prefix = schema.value("prefixItems", Json::array());
    const bool rest_allowed = !(schema.contains("items") && schema["items"] == false);
    const int most = rest_allowed ? static_cast<int>(prefix.size()) + 3 : static_cast<int>(prefix.size());
    const int max_items = std::min(schema.value("maxItems", most), most);
    const int n = uniform(min_items, max_items);
    Json out = Json::array();
    for (int i = 0; i < n; ++i) {
      if (i < static_cast<int>(prefix.size())) {
        out.push_back(generate(prefix[static_cast<size_t>(i)]));
      } else if (schema.contains("items")) {
        out.push_back(generate(schema["items"]));
      } else {
        out.push_back(any_value(kAnyJsonDepth - 1));
      }
    }
    return out;
  }

  Json string(const Json& schema) {
    if (schema.contains("format")) {
      const std::string format = schema["format"];
      const auto two = [&](int lo, int hi) {
        const int v = uniform(lo, hi);
        return std::string(1, static_cast<char>('0' + v / 10)) + static_cast<char>('0' + v % 10);
      };
      const std::string date = std::to_string(uniform(1000, 9999)) + "-" + two(1, 12) + "-" + two(1, 31);
      const std::string offsets[] = {"Z", "z", "+05:30", "-23:59", "+00:00"};
      const std::string time = two(0, 23) + ":" + two(0, 59) + ":" + two(0, 60) +
                               (uniform(0, 1) == 1 ? "." + std::to_string(uniform(0, 999999)) : "") +
                               offsets[uniform(0, 4)];
      if (format == "date") return date;
      if (format == "time") return time;
      if (format == "date-time") return date + (uniform(0, 1) == 1 ? "T" : "t") + time;
      std::string uuid;
      for (const int group : {8, 4, 4, 4, 12}) {
        if (!uuid.empty()) uuid += '-';
        for (int i = 0; i < group; ++i)
          uuid += "0123456789abcdefABCDEF"[uniform(0, 21)];
      }
      return uuid;
    }
    if (schema.contains("pattern")) {
      const auto digits = [&](int n) {
        std::string text;
        for (int i = 0; i < n; ++i)
          text += static_cast<char>('0' + uniform(0, 9));
        return text;
      };
      if (schema["pattern"] == "^[0-9]{5}$") return digits(5);
      EXPECT_EQ(schema["pattern"], "^[A-Z]{3}-[0-9]{4}$");  // the only other pattern used here
      std::string letters;
      for (int i = 0; i < 3; ++i)
        letters += static_cast<char>('A' + uniform(0, 25));
      return letters + "-" + digits(4);
    }
    const int min_length = schema.value("minLength", 0);
    return random_text(min_length, schema.value("maxLength", min_length + 8));
  }

  // Characters that the JSON writer escapes, that are special in regexes, and multi-byte UTF-8.
  std::string random_text(int min_length, int max_length) {
    static const std::vector<std::string> kChars = {"a",  "Z",  "0",    " ",    "\"",   "\\",    "/",
                                                    "\n", "\t", "\x01", "\x1f", "\x7f", "{",     "]",
                                                    ".",  "-",  "é",    "中",   "😀",    "\u2028"};
    std::string text;
    const int n = uniform(min_length, max_length);
    for (int i = 0; i < n; ++i)
      text += kChars[static_cast<size_t>(uniform(0, static_cast<int>(kChars.size()) - 1))];
    return text;
  }

  Json integer() {
    const int digits = uniform(1, 16);
    int64_t v = 0;
    for (int i = 0; i < digits; ++i)
      v = v * 10 + uniform(0, 9);
    return Json(uniform(0, 1) == 1 ? -v : v);
  }

  Json number() {
    switch (uniform(0, 2)) {
      case 0:
        return integer();
      case 1:  // a short decimal: its shortest round-trip form has few digits
        return Json(static_cast<double>(uniform(-999999, 999999)) / std::pow(10.0, uniform(0, 6)));
      default:  // the double nearest m * 10^e, which is written with m's few digits (and an exponent)
        return Json::parse(std::to_string(uniform(1, 99)) + "e" + std::to_string(uniform(-40, 40)));
    }
  }

  Json any_value(int depth) {
    switch (uniform(0, depth > 0 ? 7 : 5)) {
      case 0:
        return Json(random_text(0, 5));
      case 1:
        return number();
      case 2:
        return Json(true);
      case 3:
        return Json(false);
      case 4:
        return Json(nullptr);
      case 5:
        return integer();
      case 6: {
        Json out = Json::array();
        for (int i = uniform(0, 3); i > 0; --i)
          out.push_back(any_value(depth - 1));
        return out;
      }
      default: {
        Json out = Json::object();
        for (int i = uniform(0, 3); i > 0; --i)
          out[random_text(0, 4)] = any_value(depth - 1);
        return out;
      }
    }
  }

  const Json& root_;
  std::mt19937 rng_;
};

// ---- Schemas

const Json kPerson = Json::parse(R"({
  "title": "Person",
  "type": "object",
  "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 20, "description": "full name"},
    "age": {"type": "integer"},
    "email": {"type": "string"},
    "address": {
      "type": "object",
      "properties": {
        "street": {"type": "string"},
        "zip": {"type": "string", "pattern": "^[0-9]{5}$"}
      },
      "required": ["street"],
      "additionalProperties": false
    },
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3},
    "active": {"type": "boolean", "default": true}
  },
  "required": ["name", "age"]
})");

const Json kAllOptional = Json::parse(R"({
  "type": "object",
  "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}, "c": {"type": "null"}, "d": {"type": "string"}}
})");

const Json kBoundedArray =
    Json::parse(R"({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 4})");

const Json kEnum = Json::parse(R"({"enum": ["red", "green", null, 1, 2.5, {"k": [1, "x"], "a": true},
                                           [true, false], "a\"b\\c/{}", "é中😀", "line\nbreak"]})");

const Json kAnyOf = Json::parse(R"({"anyOf": [
  {"type": "string", "maxLength": 3},
  {"type": "integer"},
  {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}
]})");

const Json kRefs = Json::parse(R"({
  "$defs": {
    "point": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
              "required": ["x", "y"]}
  },
  "definitions": {"label": {"type": ["string", "null"], "maxLength": 4}},
  "type": "object",
  "properties": {
    "from": {"$ref": "#/$defs/point"},
    "to": {"$ref": "#/$defs/point", "description": "annotations next to $ref are fine"},
    "via": {"type": "array", "items": {"$ref": "#/$defs/point"}, "maxItems": 2},
    "label": {"allOf": [{"$ref": "#/definitions/label"}]}
  },
  "required": ["from", "to"]
})");

const Json kTuple = Json::parse(R"({"type": "array",
  "prefixItems": [{"type": "string"}, {"type": "integer"}, {"type": "boolean"}],
  "items": {"type": "null"}, "minItems": 2, "maxItems": 5})");

const Json kClosedTuple = Json::parse(R"({"type": "array",
  "prefixItems": [{"type": "integer"}, {"enum": ["a", "b"]}], "items": false})");

const Json kShortString = Json::parse(R"({"type": "string", "minLength": 2, "maxLength": 4})");

const Json kFormats = Json::parse(R"({"type": "object", "properties": {
  "d": {"type": "string", "format": "date"}, "t": {"type": "string", "format": "time"},
  "dt": {"type": "string", "format": "date-time"}, "id": {"type": "string", "format": "uuid"}},
  "required": ["d", "t", "dt", "id"]})");

const Json kMap = Json::parse(R"({"type": "object", "additionalProperties": {"type": "integer"}})");

const Json kAnything = Json::parse(R"({"type": "object", "properties": {
  "any": {}, "yes": true, "list": {"type": "array"}, "obj": {"type": "object"}}, "required": ["any"]})");

// A realistic request: mixed types, optional properties, a nested array of objects.
const Json kOrder = Json::parse(R"({
  "type": "object",
  "properties": {
    "order_id": {"type": "string", "format": "uuid"},
    "customer": {"type": "string", "minLength": 1, "maxLength": 40},
    "status": {"enum": ["pending", "shipped", "delivered", "cancelled"]},
    "total": {"type": "number"},
    "paid": {"type": "boolean"},
    "placed_at": {"type": "string", "format": "date-time"},
    "note": {"type": ["string", "null"], "maxLength": 80},
    "items": {
      "type": "array",
      "minItems": 1,
      "maxItems": 10,
      "items": {
        "type": "object",
        "properties": {
          "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
          "quantity": {"type": "integer"},
          "price": {"type": "number"},
          "gift": {"type": "boolean"}
        },
        "required": ["sku", "quantity"]
      }
    }
  },
  "required": ["order_id", "customer", "status", "items"]
})");

// ---- (1) Hand-written valid and invalid instances.

TEST(JsonSchemaRegex, NestedObjectWithOptionalProperties) {
  const auto re = compile_schema(kPerson);
  const std::vector<Json> valid = {
      Json::parse(R"({"name": "Ada", "age": 36})"),
      Json::parse(R"({"name": "Ada", "age": -1, "active": false})"),
      Json::parse(R"({"name": "A", "age": 0, "address": {"street": "Main St 1"}})"),
      Json::parse(R"({"name": "Ada", "age": 36, "address": {"street": "x", "zip": "12345"}, "tags": []})"),
      Json::parse(R"({"name": "B", "age": 1, "email": "a@b", "address": {"street": ""},
                      "tags": ["x", "yy", "zzzzz"], "active": true})"),
  };
  for (const Json& instance : valid) {
    EXPECT_TRUE(re->matches(instance.dump())) << instance.dump();
    EXPECT_TRUE(re->matches(spaced(instance))) << spaced(instance);
    // The same properties in nlohmann::json's sorted order (age before name) do not match.
    const std::string sorted = nlohmann::json::parse(instance.dump()).dump();
    EXPECT_FALSE(re->matches(sorted)) << sorted;
  }
  // Properties come in the schema's order: name, age, email, address (street, zip), tags, active.
  const std::vector<std::string> invalid = {
      R"({"name":"Ada"})",                                              // missing required age
      R"({"age":36})",                                                  // missing required name
      R"({"name":"Ada","age":"36"})",                                   // wrong type
      R"({"name":"","age":36})",                                        // string too short
      R"({"name":"aaaaaaaaaaaaaaaaaaaaa","age":36})",                   // string too long (21)
      R"({"name":"Ada","age":36,"extra":1})",                           // extra property
      R"({"name":"Ada","zzz":1,"age":36})",                             // extra property
      R"({"age":36,"name":"Ada"})",                                     // order swapped (sorted)
      R"({"name":"Ada","age":36,"active":true,"email":"a@b"})",         // optional ones swapped
      R"({"name":"Ada","age":36,"tags":[],"address":{"street":"x"}})",  // optional ones swapped
      R"({"active":true,"address":{"street":""},"age":1,"email":"a@b","name":"B","tags":[]})",  // sorted
      R"({"name":"Ada","age":36,})",                                     // trailing comma
      R"({,"name":"Ada","age":36})",                                     // leading comma
      R"({"name":"Ada",,"age":36})",                                     // double comma
      R"({"name":"Ada""age":36})",                                       // missing comma
      "{\"name\":\"Ada\",\n\"age\":36}",                                 // newline
      R"({ "name":"Ada","age":36})",                                     // space after {
      R"({"name" :"Ada","age":36})",                                     // space before :
      R"({"name":"Ada",  "age":36})",                                    // two spaces
      R"({"name":"Ada","age":36} )",                                     // trailing space
      R"({"name":"Ada","age":036})",                                     // leading zero
      R"({"name":"A","age":1,"address":{"zip":"12345"}})",               // nested required street missing
      R"({"name":"A","age":1,"address":{"street":"s","zip":"1234"}})",   // pattern
      R"({"name":"A","age":1,"address":{"zip":"12345","street":"s"}})",  // nested order swapped
      R"({"name":"A","age":1,"tags":["a","b","c","d"]})",                // too many items
      R"({"name":"A","age":1,"tags":["abcdef"]})",                       // item string too long
      R"({"name":"A","age":1,"tags":[1]})",                              // item wrong type
      R"({"name":"A","age":1,"active":null})",                           // wrong type
      R"([{"name":"A","age":1}])",                                       // wrong type at the root
  };
  for (const std::string& text : invalid)
    EXPECT_FALSE(re->matches(text)) << text;
}

TEST(JsonSchemaRegex, EveryCombinationOfOptionalPropertiesHasItsCommasRight) {
  const auto re = compile_schema(kAllOptional);
  const std::vector<std::string> members = {R"("a":1)", R"("b":true)", R"("c":null)", R"("d":"x")"};
  for (int subset = 0; subset < 16; ++subset) {
    std::vector<std::string> present;
    for (int i = 0; i < 4; ++i) {
      if (subset & (1 << i)) present.push_back(members[static_cast<size_t>(i)]);
    }
    std::string joined;
    for (size_t i = 0; i < present.size(); ++i)
      joined += (i > 0 ? "," : "") + present[i];
    EXPECT_TRUE(re->matches("{" + joined + "}")) << joined;
    if (present.empty()) {
      EXPECT_FALSE(re->matches("{,}"));
      continue;
    }
    EXPECT_FALSE(re->matches("{," + joined + "}")) << joined;
    EXPECT_FALSE(re->matches("{" + joined + ",}")) << joined;
    if (present.size() >= 2) {
      std::string swapped = present[1] + "," + present[0];
      for (size_t i = 2; i < present.size(); ++i)
        swapped += "," + present[i];
      EXPECT_FALSE(re->matches("{" + swapped + "}")) << swapped;
      std::string no_comma;
      for (const std::string& member : present)
        no_comma += member;
      EXPECT_FALSE(re->matches("{" + no_comma + "}")) << no_comma;
    }
  }
}

TEST(JsonSchemaRegex, OptionalPropertiesKeepTheRegexLinear) {
  Json schema = {{"type", "object"}, {"properties", Json::object()}};
  Json all_names = Json::array();
  for (int i = 0; i < 40; ++i) {
    const std::string name = "p" + std::to_string(100 + i);
    schema["properties"][name] = {{"type", "integer"}};
    all_names.push_back(name);
  }
  const std::string all_optional = to_regex(schema);
  schema["required"] = {"p120"};
  const std::string one_required = to_regex(schema);
  schema["required"] = all_names;
  const std::string all_required = to_regex(schema);
  // Each optional member before the first required one appears twice (with a few bytes of grouping),
  // no member more often.
  EXPECT_LT(all_optional.size(), 5 * all_required.size() / 2);
  EXPECT_LT(one_required.size(), 5 * all_required.size() / 2);

  const Pcre2Reference optional(all_optional, Pcre2Reference::utf());
  ASSERT_TRUE(optional.ok()) << optional.error();
  EXPECT_TRUE(optional.matches(R"({"p117":1,"p139":2})"));
  EXPECT_TRUE(optional.matches(R"({"p139":2})"));
  EXPECT_TRUE(optional.matches("{}"));
  EXPECT_FALSE(optional.matches(R"({"p139":2,"p117":1})"));
  EXPECT_FALSE(optional.matches(R"({"p117":1,"p117":1})"));
  const Pcre2Reference required(one_required, Pcre2Reference::utf());
  ASSERT_TRUE(required.ok()) << required.error();
  EXPECT_TRUE(required.matches(R"({"p120":0})"));
  EXPECT_TRUE(required.matches(R"({"p100":1, "p119":1, "p120":0, "p139":2})"));
  EXPECT_FALSE(required.matches(R"({"p100":1,"p119":1,"p139":2})"));
  EXPECT_FALSE(required.matches("{}"));
  EXPECT_FALSE(required.matches(R"({,"p120":0})"));
  EXPECT_FALSE(required.matches(R"({"p120":0,})"));
}

TEST(JsonSchemaRegex, ArrayItemCounts) {
  const auto re = compile_schema(kBoundedArray);
  std::string items;
  for (int n = 0; n <= 6; ++n) {
    const std::string compact = "[" + items + "]";
    EXPECT_EQ(re->matches(compact), n >= 2 && n <= 4) << compact;
    items += (n > 0 ? "," : "") + std::to_string(n * 7);
  }
  EXPECT_TRUE(re->matches("[1, 2, 3]"));
  EXPECT_FALSE(re->matches("[1,2,]"));
  EXPECT_FALSE(re->matches("[,1,2]"));
  EXPECT_FALSE(re->matches("[1,2.5]"));
  EXPECT_FALSE(re->matches("[ 1,2]"));

  const auto exact = compile_schema({{"type", "array"}, {"items", {{"type", "boolean"}}}, {"minItems", 1}});
  EXPECT_FALSE(exact->matches("[]"));
  EXPECT_TRUE(exact->matches("[true]"));
  EXPECT_TRUE(exact->matches("[true, false, true, true]"));
  const auto empty = compile_schema({{"type", "array"}, {"maxItems", 0}});
  EXPECT_TRUE(empty->matches("[]"));
  EXPECT_FALSE(empty->matches("[1]"));
}

TEST(JsonSchemaRegex, EnumAndConst) {
  const auto re = compile_schema(kEnum);
  // The object value matches with its keys in the order the schema writes them ("k", then "a").
  EXPECT_TRUE(re->matches(R"({"k":[1,"x"],"a":true})"));
  for (const Json& value : kEnum["enum"]) {
    EXPECT_TRUE(re->matches(value.dump())) << value.dump();
    EXPECT_TRUE(re->matches(spaced(value))) << spaced(value);
  }
  for (const std::string text :
       {R"("blue")", R"("Red")", "2", "2.50", R"({"k":[1,"x"]})", R"({"a":true,"k":[1,"x"]})", "[false,true]",
        R"("a\"b\\c\/{}")", "nul", R"("redred")", R"("red""green")"}) {
    EXPECT_FALSE(re->matches(text)) << text;
  }
  const auto constant = compile_schema({{"const", "a.b*c"}});
  EXPECT_TRUE(constant->matches(R"("a.b*c")"));
  EXPECT_FALSE(constant->matches(R"("aXbbc")"));
  // enum with type keeps the values of that type; enum with const keeps the const.
  const auto typed = compile_schema(Json::parse(R"({"type": "string", "enum": ["x", 1, null]})"));
  EXPECT_TRUE(typed->matches(R"("x")"));
  EXPECT_FALSE(typed->matches("1"));
  EXPECT_FALSE(typed->matches("null"));
  const auto both = compile_schema(Json::parse(R"({"enum": [1, 2], "const": 2})"));
  EXPECT_TRUE(both->matches("2"));
  EXPECT_FALSE(both->matches("1"));
}

TEST(JsonSchemaRegex, AnyOfOneOfAndTypeLists) {
  const auto re = compile_schema(kAnyOf);
  for (const std::string text : {R"("abc")", R"("")", "-12", R"({"x":1.5e3})", R"({"x": 0})"})
    EXPECT_TRUE(re->matches(text)) << text;
  for (const std::string text : {R"("abcd")", "1.5", R"({})", R"({"y":1})", "true", R"("a"1)"})
    EXPECT_FALSE(re->matches(text)) << text;

  Json one_of = kAnyOf;
  one_of["oneOf"] = one_of["anyOf"];
  one_of.erase("anyOf");
  EXPECT_EQ(to_regex(one_of), to_regex(kAnyOf));

  const auto nullable = compile_schema(Json::parse(R"({"type": ["string", "null"], "maxLength": 2})"));
  EXPECT_TRUE(nullable->matches("null"));
  EXPECT_TRUE(nullable->matches(R"("ab")"));
  EXPECT_FALSE(nullable->matches(R"("abc")"));
  EXPECT_FALSE(nullable->matches("0"));
}

TEST(JsonSchemaRegex, RefsToDefsAndDefinitions) {
  const auto re = compile_schema(kRefs);
  for (const std::string text :
       {R"({"from":{"x":0,"y":1},"to":{"x":2,"y":3}})",
        R"({"from": {"x": 0, "y": 1}, "to": {"x": 2, "y": 3}, "label": null})",
        R"({"from":{"x":0,"y":1},"to":{"x":2,"y":3},"via":[{"x":1,"y":1}],"label":"abcd"})"}) {
    EXPECT_TRUE(re->matches(text)) << text;
  }
  // Properties in the schema's order: from, to, via, label (and x, y in a point).
  for (const std::string text :
       {R"({"from":{"x":0},"to":{"x":2,"y":3}})",
        R"({"from":{"x":0,"y":1},"to":{"x":2,"y":3},"label":"abcde"})",
        R"({"from":{"x":0,"y":1},"to":{"x":2,"y":3},"via":[{},{},{}]})",
        R"({"to":{"x":2,"y":3},"from":{"x":0,"y":1}})", R"({"from":{"y":1,"x":0},"to":{"x":2,"y":3}})",
        R"({"from":{"x":0,"y":1},"to":{"x":2,"y":3},"label":"abcd","via":[]})",
        R"({"from":{"x":0,"y":1},"label":"abcd","to":{"x":2,"y":3},"via":[{"x":1,"y":1}]})"}) {
    EXPECT_FALSE(re->matches(text)) << text;
  }
}

TEST(JsonSchemaRegex, PrefixItemsThenItems) {
  const auto re = compile_schema(kTuple);
  for (const std::string text : {R"(["a",1])", R"(["a", 1, true])", R"(["a",1,false,null,null])"})
    EXPECT_TRUE(re->matches(text)) << text;
  for (const std::string text : {R"(["a"])", R"([1,"a"])", R"(["a",1,null])",
                                 R"(["a",1,true,null,null,null])", R"(["a",1,true,1])", "[]"}) {
    EXPECT_FALSE(re->matches(text)) << text;
  }
  const auto closed = compile_schema(kClosedTuple);
  for (const std::string text : {"[]", "[1]", R"([1,"b"])"})
    EXPECT_TRUE(closed->matches(text)) << text;
  for (const std::string text : {R"([1,"b",2])", R"(["a"])", R"([1,"c"])"})
    EXPECT_FALSE(closed->matches(text)) << text;
  // The drafts before 2020-12: items as an array, then additionalItems.
  const auto old_form = compile_schema(Json::parse(
      R"({"type":"array","items":[{"type":"integer"}],"additionalItems":{"type":"string"},"minItems":1})"));
  EXPECT_TRUE(old_form->matches(R"([1,"a","b"])"));
  EXPECT_FALSE(old_form->matches(R"([1,2])"));
  EXPECT_FALSE(old_form->matches("[]"));
}

TEST(JsonSchemaRegex, StringLengthsCountEscapesAndCharactersOnce) {
  const auto re = compile_schema(kShortString);
  for (const std::string text : {R"("ab")", R"("abcd")", R"("a\nb")", R"("\u00e9\/")", R"("\"\\")",
                                 "\"中文字\"", "\"😀😀\"", R"("\b\f\r\t")", "\"a\x7f\""}) {
    EXPECT_TRUE(re->matches(text)) << text;
  }
  for (const std::string text : {R"("a")", R"("abcde")", R"("\u00e9")", "\"a\nb\"", "\"a\x01\"", R"("a\x")",
                                 R"("\u12g4")", R"("\u12")", R"("a"b")", R"("ab\")", "ab", R"('ab')"}) {
    EXPECT_FALSE(re->matches(text)) << text;
  }
  const auto pattern = compile_schema(Json::parse(R"({"type":"string","pattern":"^a(b|c)*$"})"));
  EXPECT_TRUE(pattern->matches(R"("abcb")"));
  EXPECT_FALSE(pattern->matches(R"("abd")"));
  // A trailing escaped dollar stays part of the pattern.
  const auto dollar = compile_schema(Json::parse(R"({"type":"string","pattern":"x\\$"})"));
  EXPECT_TRUE(dollar->matches(R"("x$")"));
  EXPECT_FALSE(dollar->matches(R"("x")"));
}

TEST(JsonSchemaRegex, Numbers) {
  const auto number = compile_schema({{"type", "number"}});
  for (const std::string text :
       {"0", "-0", "1.5", "-12.25e+10", "1E5", "3e-7", "1234567890123456", "0.1234567890123456", "1e99"}) {
    EXPECT_TRUE(number->matches(text)) << text;
  }
  for (const std::string text :
       {"01", "-", "1.", ".5", "+1", "1e", "1e999", "1e1234", "12345678901234567", "0.12345678901234567",
        "NaN", "Infinity", "0x10", "1 ", "- 1", "1.5.2", "--1"}) {
    EXPECT_FALSE(number->matches(text)) << text;
  }
  const auto integer = compile_schema({{"type", "integer"}});
  for (const std::string text : {"0", "-5", "1234567890123456"})
    EXPECT_TRUE(integer->matches(text)) << text;
  for (const std::string text : {"1.0", "1e5", "00", "-01", "-0.5", "true"})
    EXPECT_FALSE(integer->matches(text)) << text;
  const auto boolean = compile_schema({{"type", "boolean"}});
  EXPECT_TRUE(boolean->matches("true"));
  EXPECT_TRUE(boolean->matches("false"));
  EXPECT_FALSE(boolean->matches("truefalse"));
  EXPECT_FALSE(boolean->matches("True"));
}

TEST(JsonSchemaRegex, Formats) {
  const auto re = compile_schema(kFormats);
  // Properties in the schema's order: d, t, dt, id.
  EXPECT_TRUE(re->matches(
      R"({"d":"2024-02-29","t":"00:00:00Z","dt":"2024-02-29T23:59:60.5+05:30","id":"123e4567-e89b-12d3-a456-426614174000"})"));
  // The same properties sorted do not match.
  EXPECT_FALSE(re->matches(
      R"({"d":"2024-02-29","dt":"2024-02-29T23:59:60.5+05:30","id":"123e4567-e89b-12d3-a456-426614174000","t":"00:00:00Z"})"));
  for (const std::string bad : {R"("2024-13-01")", R"("2024-1-01")", R"("24-01-01")"}) {
    EXPECT_FALSE(re->matches(
        R"({"d":)" + bad +
        R"(,"t":"00:00:00Z","dt":"2024-02-29T23:59:59Z","id":"123e4567-e89b-12d3-a456-426614174000"})"))
        << bad;
  }
  for (const std::string bad : {R"("24:00:00Z")", R"("12:00:00")", R"("12:00Z")"}) {
    EXPECT_FALSE(re->matches(R"({"d":"2024-01-01","t":)" + bad +
                             R"(,"dt":"2024-02-29T23:59:59Z","id":"123e4567-e89b-12d3-a456-426614174000"})"))
        << bad;
  }
  EXPECT_FALSE(re->matches(
      R"({"d":"2024-01-01","t":"00:00:00Z","dt":"2024-02-29 23:59:59Z","id":"123e4567-e89b-12d3-a456-426614174000"})"));
  EXPECT_FALSE(re->matches(
      R"({"d":"2024-01-01","t":"00:00:00Z","dt":"2024-02-29T23:59:59Z","id":"123e4567e89b12d3a456426614174000"})"));
}

TEST(JsonSchemaRegex, UnconstrainedValuesNestTwoLevels) {
  const auto re = compile_schema(kAnything);
  for (const std::string text : {R"({"any":1})", R"({"any":[1,{"a":null}],"yes":"s"})", R"({"any":{"k":[]}})",
                                 R"({"any":null,"list":[[1],{"a":"b"}],"obj":{"x":{"y":2}}})"}) {
    EXPECT_TRUE(re->matches(text)) << text;
  }
  for (const std::string text :
       {R"({"any":[[[1]]]})", R"({"any":{"k":{"j":[]}}})", R"({"any":1,"list":[[[1]]]})",
        R"({"any":1,"list":{}})", R"({"any":1,"obj":[]})", R"({"any":{1:2}})"}) {
    EXPECT_FALSE(re->matches(text)) << text;
  }
  const auto everything = compile_schema(Json::object());
  EXPECT_TRUE(everything->matches(R"([{"a": 1}, [2.5, "s"], true, null])"));
  EXPECT_FALSE(everything->matches(R"([{"a": [1, "x"]}])"));
  EXPECT_FALSE(everything->matches("[[[]]]"));
  EXPECT_EQ(to_regex(Json(true)), to_regex(Json::object()));

  const auto map = compile_schema(kMap);
  EXPECT_TRUE(map->matches(R"({"a":1, "b":2})"));
  EXPECT_TRUE(map->matches("{}"));
  EXPECT_FALSE(map->matches(R"({"a":"1"})"));
  const auto closed = compile_schema(Json::parse(R"({"type":"object","additionalProperties":false})"));
  EXPECT_TRUE(closed->matches("{}"));
  EXPECT_FALSE(closed->matches(R"({"a":1})"));
}

// ---- (2) Seeded random instances, in compact, spaced and mixed layouts; every one matches, and
// the same text with a newline inserted or a comma appended does not.

TEST(JsonSchemaRegex, RandomInstancesMatch) {
  const std::vector<Json> schemas = {kPerson, kAllOptional, kBoundedArray, kEnum,        kAnyOf,
                                     kRefs,   kTuple,       kClosedTuple,  kShortString, kFormats,
                                     kMap,    kAnything,    kOrder};
  for (size_t s = 0; s < schemas.size(); ++s) {
    const auto re = compile_schema(schemas[s]);
    InstanceGenerator generator(schemas[s], static_cast<uint32_t>(1000 + s));
    for (int i = 0; i < 150; ++i) {
      const Json instance = generator.generate(schemas[s]);
      for (const Spacing spacing : {Spacing::kCompact, Spacing::kSpaced, Spacing::kRandom}) {
        const std::string text = serialize(instance, spacing, &generator.rng());
        ASSERT_TRUE(re->matches(text)) << "schema " << s << ": " << text;
        // A newline, inserted where a character starts (not inside a UTF-8 sequence).
        size_t at = generator.rng()() % (text.size() + 1);
        while (at < text.size() && (static_cast<unsigned char>(text[at]) & 0xC0) == 0x80)
          ++at;
        std::string broken = text;
        broken.insert(at, "\n");
        EXPECT_FALSE(re->matches(broken)) << "schema " << s << ": " << broken;
        EXPECT_FALSE(re->matches(text + ",")) << "schema " << s << ": " << text;
      }
    }
  }
}

// ---- (4) Refusals name the keyword and where it is.

TEST(JsonSchemaRegex, RefusedKeywordsNameKeywordAndPointer) {
  const std::string message =
      error_of(Json::parse(R"({"type":"object","properties":{"age":{"type":"integer","minimum":0}}})"));
  EXPECT_NE(message.find("json_schema: keyword 'minimum' at /properties/age is not supported"),
            std::string::npos)
      << message;
  const Json refused = Json::parse(R"({
    "maximum": 1, "exclusiveMinimum": 1, "exclusiveMaximum": 1, "multipleOf": 2,
    "patternProperties": {"a": {}}, "propertyNames": {"maxLength": 2}, "not": {}, "if": {}, "then": {}, "else": {},
    "dependentRequired": {}, "dependentSchemas": {}, "uniqueItems": true, "contains": {}, "minContains": 1,
    "minProperties": 1, "maxProperties": 2, "unevaluatedProperties": false, "contentEncoding": "base64",
    "nullable": true, "$anchor": "x", "x-custom": 1})");
  for (const auto& [keyword, value] : refused.items()) {
    const Json schema = {{"$defs", {{"a/b~c", {{"type", "array"}, {keyword, value}}}}},
                         {"$ref", "#/$defs/a~1b~0c"}};
    const std::string text = error_of(schema);
    EXPECT_NE(text.find("'" + keyword + "' at /$defs/a~1b~0c is not supported"), std::string::npos) << text;
  }
  // Annotations are ignored; uniqueItems false constrains nothing.
  to_regex(Json::parse(R"({"title":"t","description":"d","default":1,"examples":[1],"$schema":"s","$id":"i",
                           "$comment":"c","deprecated":false,"readOnly":true,"writeOnly":false,"type":"integer"})"));
  to_regex(Json::parse(R"({"type":"array","uniqueItems":false})"));
}

TEST(JsonSchemaRegex, RefusedSchemas) {
  const auto expect_error = [](const Json& schema, std::vector<std::string> parts) {
    const std::string message = error_of(schema);
    for (const std::string& part : parts)
      EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
  };
  expect_error(
      Json::parse(R"({"$defs":{"node":{"type":"object","properties":{"next":{"$ref":"#/$defs/node"}}}},
                               "$ref":"#/$defs/node"})"),
      {"$ref '#/$defs/node' at /$defs/node/properties/next", "recursive"});
  expect_error(Json::parse(R"({"definitions":{"a":{"type":"array","items":{"$ref":"#/definitions/b"}},
                                              "b":{"anyOf":[{"type":"null"},{"$ref":"#/definitions/a"}]}},
                               "type":"object","properties":{"x":{"$ref":"#/definitions/a"}}})"),
               {"$ref '#/definitions/a' at /definitions/b/anyOf/1", "recursive"});
  expect_error(Json::parse(R"({"$ref":"#"})"), {"$ref '#' at the root", "not supported"});
  expect_error(Json::parse(R"({"type":"object","properties":{"p":{"$ref":"#/$defs/missing"}}})"),
               {"$ref '#/$defs/missing' at /properties/p", "points to nothing"});
  expect_error(Json::parse(R"({"$ref":"https://example.com/schema.json"})"),
               {"$ref 'https://example.com", "at the root"});
  expect_error(Json::parse(R"({"$defs":{"a":{"type":"string"}},"$ref":"#/$defs/a","maxLength":3})"),
               {"'maxLength' next to '$ref' at the root"});
  expect_error(Json::parse(R"({"type":"object","properties":{"a":false}})"), {"/properties/a", "false"});
  expect_error(Json(false), {"the root", "false"});
  expect_error(Json::parse(R"({"type":"object","properties":{"a":{}},"additionalProperties":true})"),
               {"'additionalProperties' at the root",
                "additionalProperties other than false is not supported with properties"});
  expect_error(
      Json::parse(R"({"type":"object","properties":{"a":{}},"additionalProperties":{"type":"string"}})"),
      {"additionalProperties other than false is not supported with properties"});
  expect_error(Json::parse(R"({"allOf":[{"type":"string"},{"maxLength":3}]})"),
               {"'allOf' at the root", "one member"});
  expect_error(Json::parse(R"({"type":"string","format":"email"})"), {"format 'email' at the root"});
  expect_error(Json::parse(R"({"type":"strin"})"), {"'type' at the root"});
  expect_error(Json::parse(R"({"type":"object","properties":{"a":{}},"required":["b"]})"),
               {"required property 'b' at the root"});
  expect_error(Json::parse(R"({"type":"array","minItems":3,"maxItems":2})"), {"'minItems' at the root"});
  expect_error(Json::parse(R"({"type":"string","maxLength":5000})"), {"'maxLength' at the root", "1000"});
  expect_error(Json::parse(R"({"type":"string","pattern":"a","maxLength":5})"),
               {"'maxLength' next to 'pattern'"});
  expect_error(Json::parse(R"({"enum":["a"],"maxLength":5})"), {"'maxLength' next to 'enum'"});
  expect_error(Json::parse(R"({"type":"integer","enum":["a"]})"), {"'enum' / 'const' at the root"});
  expect_error(Json::parse(R"({"anyOf":[]})"), {"'anyOf' at /anyOf"});
  expect_error(Json(42), {"the root", "must be an object or a boolean"});
  // A pattern must stay inside its group: text after it must not join it.
  for (const std::string pattern : {"a)|(b", "(a", "a\\", "[a", "[]a]", "a)(b"}) {
    expect_error({{"type", "object"}, {"properties", {{"s", {{"type", "string"}, {"pattern", pattern}}}}}},
                 {"'pattern' at /properties/s"});
  }
  Json deep_value = 1;
  for (int i = 0; i < 40; ++i)
    deep_value = Json::array({deep_value});
  expect_error({{"const", deep_value}}, {"'enum' / 'const' at the root", "deeper"});

  // Nesting deeper than 32 levels.
  Json deep = {{"type", "integer"}};
  for (int i = 0; i < 40; ++i)
    deep = {{"type", "array"}, {"items", deep}};
  expect_error(deep, {"nests deeper than 32 levels"});
  // A regex over 64 KB: a long enum, and properties whose regexes double at every level.
  Json big_enum = {{"enum", Json::array()}};
  for (int i = 0; i < 2000; ++i)
    big_enum["enum"].push_back("value number " + std::to_string(i) + " of a long enumeration");
  expect_error(big_enum, {"longer than 65536 bytes"});
  Json doubling = {{"$defs", Json::object()}};
  for (int i = 0; i < 14; ++i) {  // 2^14 integers, 29 levels deep
    const std::string next =
        i == 13 ? R"({"type":"integer"})" : R"({"$ref":"#/$defs/d)" + std::to_string(i + 1) + "\"}";
    doubling["$defs"]["d" + std::to_string(i)] =
        Json::parse(R"({"type":"object","properties":{"a":)" + next + R"(,"b":)" + next + "}}");
  }
  doubling["$ref"] = "#/$defs/d0";
  expect_error(doubling, {"longer than 65536 bytes"});
}

TEST(JsonSchemaRegex, ItemsThatCannotAppearAreNotConverted) {
  // A hang found with a hand-made input to fuzz_response_format: the items of an array under
  // maxItems 0 were converted and their regex dropped, out of reach of the 64 KB cap on the result:
  // ten levels of ten references each (under 3 KB of schema) took 10^10 conversions. Like tuple
  // items past maxItems, they are no longer converted (so their schemas need not be supported).
  Json defs = {{"d0", {{"type", "null"}}}};
  for (int level = 1; level <= 10; ++level) {
    Json refs = Json::array();
    for (int i = 0; i < 10; ++i)
      refs.push_back({{"$ref", "#/$defs/d" + std::to_string(level - 1)}});
    defs["d" + std::to_string(level)] = {{"type", "array"}, {"maxItems", 0}, {"items", {{"anyOf", refs}}}};
  }
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(to_regex({{"$defs", defs}, {"$ref", "#/$defs/d10"}}), R"(\[\])");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 10.0);

  EXPECT_EQ(to_regex(Json::parse(R"({"type":"array","maxItems":0,"items":{"format":"email"}})")), R"(\[\])");
  const auto tuple = compile_schema(
      Json::parse(R"({"prefixItems":[{"type":"null"}],"maxItems":1,"items":{"format":"email"}})"));
  EXPECT_TRUE(tuple->matches("[]"));
  EXPECT_TRUE(tuple->matches("[null]"));
  EXPECT_FALSE(tuple->matches("[null,null]"));
  EXPECT_NE(
      error_of(Json::parse(R"({"prefixItems":[{"type":"null"}],"maxItems":2,"items":{"format":"email"}})"))
          .find("format 'email' at /items"),
      std::string::npos);
}

TEST(JsonSchemaRegex, ARefIsConvertedOncePerDepth) {
  // Converted again at every reference, a target whose regex is short but whose conversion is not
  // (an enum of 100000 values the type drops, regex "null") cost 10^4 times its work here: 10^9
  // values written out.
  Json values = Json::array();
  for (int i = 0; i < 100000; ++i)
    values.push_back(0);
  values.push_back(nullptr);
  Json refs_to_a = Json::array();
  Json refs_to_b = Json::array();
  for (int i = 0; i < 100; ++i) {
    refs_to_a.push_back({{"$ref", "#/$defs/a"}});
    refs_to_b.push_back({{"$ref", "#/$defs/b"}});
  }
  const auto start = std::chrono::steady_clock::now();
  const std::string regex =
      to_regex({{"$defs", {{"a", {{"type", "null"}, {"enum", values}}}, {"b", {{"anyOf", refs_to_a}}}}},
                {"anyOf", refs_to_b}});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 10.0);
  std::string b = "(?:null";
  for (int i = 1; i < 100; ++i)
    b += "|null";
  b += ")";
  std::string expected = "(?:" + b;
  for (int i = 1; i < 100; ++i)
    expected += "|" + b;
  EXPECT_EQ(regex, expected + ")");

  // A target reached once near the root and once deeper than 32 levels is still refused there:
  // the conversion at the shallow depth does not stand in for the deep one.
  Json deep = {{"$ref", "#/$defs/pair"}};
  for (int i = 0; i < 29; ++i)
    deep = {{"type", "array"}, {"items", deep}};
  const Json pair = {{"type", "array"}, {"items", {{"type", "array"}, {"items", {{"type", "null"}}}}}};
  const std::string message = error_of({{"$defs", {{"pair", pair}}},
                                        {"type", "object"},
                                        {"properties", {{"a", {{"$ref", "#/$defs/pair"}}}, {"b", deep}}}});
  EXPECT_NE(message.find("nests deeper than 32 levels"), std::string::npos) << message;
}

// ---- (6) The regexes through RegexDfa under the default limits: it must agree with PCRE2 on
// valid instances and on their mutations (most of them invalid, right at the edge of the language).

std::vector<std::string> mutations(const std::string& text, std::mt19937& rng) {
  std::vector<std::string> out;
  for (int i = 0; i < 6; ++i) {
    const size_t at = rng() % (text.size() + 1);
    std::string changed = text;
    switch (i) {
      case 0:
        changed = text.substr(0, at);  // a prefix
        break;
      case 1:
        if (at < text.size()) changed.erase(at, 1);
        break;
      case 2:
        if (at < text.size()) changed.insert(at, 1, text[at]);
        break;
      case 3:
        changed.insert(at, std::string(1, " ,:{}[]\"0-.e\n"[rng() % 13]));
        break;
      case 4:
        if (at + 1 < text.size()) std::swap(changed[at], changed[at + 1]);
        break;
      default:
        if (at < text.size()) changed[at] = static_cast<char>(rng() % 256);
        break;
    }
    out.push_back(std::move(changed));
  }
  return out;
}

struct DfaCheck {
  int regex_bytes = 0;
  int dfa_states = 0;
  int matched = 0;
  int compared = 0;
};

DfaCheck check_dfa_against_pcre(const Json& schema, uint32_t seed, int instances) {
  DfaCheck check;
  const std::string regex = to_regex(schema);
  check.regex_bytes = static_cast<int>(regex.size());
  RegexDfa dfa;
  const Status status = RegexDfa::compile(regex, RegexLimits{}, &dfa);
  EXPECT_TRUE(status.ok()) << status.message() << "\nschema: " << schema.dump();
  if (!status.ok()) return check;
  check.dfa_states = dfa.num_states();
  const Pcre2Reference pcre(regex, Pcre2Reference::utf());
  EXPECT_TRUE(pcre.ok()) << pcre.error();
  if (!pcre.ok()) return check;
  InstanceGenerator generator(schema, seed);
  std::mt19937& rng = generator.rng();
  for (int i = 0; i < instances; ++i) {
    const Json instance = generator.generate(schema);
    for (const Spacing spacing : {Spacing::kCompact, Spacing::kSpaced, Spacing::kRandom}) {
      const std::string text = serialize(instance, spacing, &rng);
      EXPECT_TRUE(dfa.matches(text)) << text;
      check.matched += dfa.matches(text) ? 1 : 0;
      for (const std::string& changed : mutations(text, rng)) {
        EXPECT_EQ(dfa.matches(changed), pcre.matches(changed)) << changed;
        ++check.compared;
      }
    }
  }
  return check;
}

TEST(JsonSchemaRegex, RealisticSchemaCompilesToADfaThatAgreesWithPcre2) {
  const DfaCheck check = check_dfa_against_pcre(kOrder, 42, 150);
  EXPECT_EQ(check.matched, 450);
  EXPECT_EQ(check.compared, 450 * 6);
  RecordProperty("regex_bytes", check.regex_bytes);
  RecordProperty("dfa_states", check.dfa_states);
  // Hand-written ones: the invalid texts must be refused by the automaton too.
  const std::string regex = to_regex(kOrder);
  RegexDfa dfa;
  ASSERT_TRUE(RegexDfa::compile(regex, RegexLimits{}, &dfa).ok());
  const Pcre2Reference pcre(regex, Pcre2Reference::utf());
  // Properties in the schema's order: order_id, customer, status, total, paid, placed_at, note,
  // items; in an item: sku, quantity, price, gift.
  const std::string valid =
      R"({"order_id":"123e4567-e89b-12d3-a456-426614174000","customer":"Ada","status":"shipped","items":[{"sku":"ABC-1234","quantity":2}]})";
  EXPECT_TRUE(dfa.matches(valid));
  EXPECT_TRUE(pcre.matches(valid));
  for (
      const std::string text : {
          R"({"order_id":"123e4567-e89b-12d3-a456-426614174000","customer":"Ada","status":"shipped","items":[]})",
          R"({"order_id":"123e4567-e89b-12d3-a456-426614174000","customer":"Ada","status":"lost","items":[{"sku":"ABC-1234","quantity":2}]})",
          R"({"order_id":"123e4567-e89b-12d3-a456-426614174000","customer":"Ada","status":"shipped","items":[{"sku":"ABC-12345","quantity":2}]})",
          R"({"order_id":"123e4567-e89b-12d3-a456-426614174000","customer":"Ada","status":"shipped","items":[{"quantity":2}]})",
          R"({"order_id":"123e4567-e89b-12d3-a456-426614174000","customer":"Ada","status":"shipped","total":01,"items":[{"sku":"ABC-1234","quantity":2}]})",
          R"({"customer":"Ada","order_id":"123e4567-e89b-12d3-a456-426614174000","status":"shipped","items":[{"sku":"ABC-1234","quantity":2}]})",
          R"({"order_id":"123e4567-e89b-12d3-a456-426614174000","customer":"Ada","status":"shipped","items":[{"quantity":2,"sku":"ABC-1234"}]})",
          R"({"order_id":"123e4567-e89b-12d3-a456-426614174000","customer":"Ada","status":"shipped","items":[{"sku":"ABC-1234","quantity":2}],"total":1})",
          R"({"customer":"Ada","items":[{"quantity":2,"sku":"ABC-1234"}],"order_id":"123e4567-e89b-12d3-a456-426614174000","status":"shipped"})",
      }) {
    EXPECT_FALSE(dfa.matches(text)) << text;
    EXPECT_FALSE(pcre.matches(text)) << text;
  }
}

TEST(JsonSchemaRegex, EverySchemaHereCompilesToADfaThatAgreesWithPcre2) {
  const std::vector<Json> schemas = {kPerson, kAllOptional, kBoundedArray, kEnum,    kAnyOf, kRefs,
                                     kTuple,  kClosedTuple, kShortString,  kFormats, kMap,   kAnything};
  for (size_t s = 0; s < schemas.size(); ++s) {
    SCOPED_TRACE("schema " + std::to_string(s));
    const DfaCheck check = check_dfa_against_pcre(schemas[s], static_cast<uint32_t>(7 + s), 40);
    RecordProperty("schema_" + std::to_string(s) + "_regex_bytes", check.regex_bytes);
    RecordProperty("schema_" + std::to_string(s) + "_dfa_states", check.dfa_states);
  }
}

// ---- (5) regex_escape: the escaped text matches exactly the text.

TEST(JsonSchemaRegex, EscapeRoundTrip) {
  EXPECT_EQ(regex_escape(R"(\.*+?()[]{}|^$/-)"), R"(\\\.\*\+\?\(\)\[\]\{\}\|\^\$\/\-)");
  EXPECT_EQ(regex_escape(std::string("a\n\x01\x7f", 4)), R"(a\x0A\x01\x7F)");
  EXPECT_EQ(regex_escape("é中,:\" #"), "é中,:\" #");
  std::vector<std::string> pieces = {"é", "中", "😀", "\u2028", " ", "\"", ",",
                                     ":", "#",  "&", "~",      "a", "Z",  "9"};
  for (const char c : std::string_view(R"(\.*+?()[]{}|^$/-)"))
    pieces.push_back(std::string(1, c));
  for (int c = 0; c < 0x20; ++c)
    pieces.push_back(std::string(1, static_cast<char>(c)));
  pieces.push_back("\x7f");
  std::mt19937 rng(7);
  for (int i = 0; i < 500; ++i) {
    std::string text;
    for (int n = static_cast<int>(rng() % 12); n > 0; --n)
      text += pieces[rng() % pieces.size()];
    const Pcre2Reference re(regex_escape(text), Pcre2Reference::utf());
    ASSERT_TRUE(re.ok()) << re.error() << " for " << Json(text).dump();
    EXPECT_TRUE(re.matches(text)) << Json(text).dump();
    EXPECT_FALSE(re.matches(text + "a")) << Json(text).dump();
    if (!text.empty()) {
      if (static_cast<unsigned char>(text[0]) < 0x80) {
        EXPECT_FALSE(re.matches(text.substr(1))) << Json(text).dump();
      }
      // Flip a bit of an ASCII character (so the text stays valid UTF-8): a different text.
      std::string changed = text;
      const size_t at = rng() % changed.size();
      if (static_cast<unsigned char>(changed[at]) < 0x80) {
        changed[at] ^= 0x20;
        EXPECT_FALSE(re.matches(changed)) << Json(text).dump();
      }
    }
  }
}

}  // namespace
}  // namespace kvserve
