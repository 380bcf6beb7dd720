#include "engine/json_limits.h"

#include <vector>

namespace kvserve {

std::string json_over_limits(std::string_view text, int max_depth, size_t max_members) {
  // Per open container: members seen so far in an object (commas + 1 once it has one), or
  // SIZE_MAX for an array, whose elements are not bounded here.
  constexpr size_t kArray = static_cast<size_t>(-1);
  std::vector<size_t> open;
  std::string over;
  const auto count_member = [&] {
    if (++open.back() <= max_members) return true;
    over = "an object with more than " + std::to_string(max_members) + " members";
    return false;
  };
  scan_json_structure(text, 0, [&](char c, size_t) {
    if (c == '"') {
      if (!open.empty() && open.back() == 0) return count_member();  // an object's first key
    } else if (c == '[' || c == '{') {
      if (static_cast<int>(open.size()) >= max_depth) {
        over = "nested deeper than " + std::to_string(max_depth) + " levels";
        return false;
      }
      open.push_back(c == '[' ? kArray : 0);
    } else if (c == ']' || c == '}') {
      if (!open.empty()) open.pop_back();
    } else if (!open.empty() && open.back() != kArray) {  // ',' in an object: one more member
      return count_member();
    }
    return true;
  });
  return over;
}

}  // namespace kvserve
