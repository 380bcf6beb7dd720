// The pre-parse bounds on JSON text (engine/json_limits.h): depth and members counted as the parser
// would see them, with brackets, braces, commas and quotes inside strings (escaped ones included)
// left alone.
#include "engine/json_limits.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kvserve {
namespace {

TEST(JsonLimits, CountsDepthAndMembersOutsideStrings) {
  EXPECT_EQ(json_over_limits(R"({"a": [[1]], "b": {"c": 2}})", 3, 2), "");
  EXPECT_EQ(json_over_limits(R"({"a": [[[1]]]})", 3, 2), "nested deeper than 3 levels");
  EXPECT_EQ(json_over_limits(R"({"a": 1, "b": 2, "c": 3})", 8, 2), "an object with more than 2 members");
  // Arrays hold any number of elements; members are counted per object, nested ones apart.
  EXPECT_EQ(json_over_limits(R"([1, 2, 3, 4, {"a": 1, "b": {"x": 1, "y": 2}}])", 8, 2), "");
  EXPECT_EQ(json_over_limits("{}", 8, 0), "");
  EXPECT_EQ(json_over_limits(R"({"a": 1})", 8, 0), "an object with more than 0 members");
  // Inside strings nothing counts, an escaped quote does not end the string.
  EXPECT_EQ(json_over_limits(R"({"k": "[[[[,,,,{{{{\"[[[[,,,,"})", 2, 1), "");
  EXPECT_EQ(json_over_limits(R"(["\\", [[1]]])", 2, 1), "nested deeper than 2 levels");
}

TEST(JsonLimits, ScanVisitsStructureAndStopsWhenAsked) {
  std::string seen;
  const std::string text = R"({"a,[": [1, "]"], "b": {}})";
  EXPECT_EQ(scan_json_structure(text, 0,
                                [&](char c, size_t) {
                                  seen += c;
                                  return true;
                                }),
            text.size());
  EXPECT_EQ(seen, R"({"[,"],"{}})");
  // Stopping: the index of the character it stopped at.
  const size_t at = scan_json_structure(text, 1, [&](char c, size_t) { return c != '['; });
  EXPECT_EQ(text[at], '[');
  EXPECT_EQ(at, 8u);
}

}  // namespace
}  // namespace kvserve
