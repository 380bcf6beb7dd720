#include "server/json_limits.h"

#include <vector>

namespace kvserve {

std::string json_over_limits(std::string_view text, int max_depth, size_t max_members) {
  // Per open container: members seen so far in an object (commas + 1 once it has one), or
  // SIZE_MAX for an array, whose elements are not bounded here.
  constexpr size_t kArray = static_cast<size_t>(-1);
  std::vector<size_t> open;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
      if (!open.empty() && open.back() == 0) open.back() = 1;  // an object's first key
    } else if (c == '[' || c == '{') {
      if (static_cast<int>(open.size()) >= max_depth)
        return "nested deeper than " + std::to_string(max_depth) + " levels";
      open.push_back(c == '[' ? kArray : 0);
    } else if (c == ']' || c == '}') {
      if (!open.empty()) open.pop_back();
    } else if (c == ',' && !open.empty() && open.back() != kArray) {
      if (++open.back() > max_members)
        return "an object with more than " + std::to_string(max_members) + " members";
    }
  }
  return {};
}

}  // namespace kvserve
