#include "server/response_store.h"

#include <utility>

namespace kvserve {
namespace {

// What a stored response holds in memory, near enough: its JSON text (the parsed form is larger by
// a constant factor, which the capacity's choice absorbs) and the key strings.
size_t size_of(const std::string& id, const std::string& owner, const ResponseStore::Stored& stored) {
  const auto text_size = [](const nlohmann::ordered_json& json) {
    return json.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace).size();
  };
  return id.size() + owner.size() + text_size(stored.response) + text_size(stored.items);
}

}  // namespace

bool ResponseStore::put(const std::string& id, const std::string& owner, Stored stored) {
  const size_t bytes = size_of(id, owner, stored);
  std::lock_guard lock(mu_);
  if (auto it = by_id_.find(id); it != by_id_.end()) remove(it->second);
  if (bytes > capacity_bytes_) {
    changed();
    return false;
  }
  while (bytes_ + bytes > capacity_bytes_)
    remove(std::prev(order_.end()));
  order_.push_front(Entry{id, owner, std::make_shared<const Stored>(std::move(stored)), bytes});
  by_id_[id] = order_.begin();
  bytes_ += bytes;
  changed();
  return true;
}

std::shared_ptr<const ResponseStore::Stored> ResponseStore::find(const std::string& id,
                                                                 const std::string& owner) {
  std::lock_guard lock(mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end() || it->second->owner != owner) return nullptr;
  order_.splice(order_.begin(), order_, it->second);
  return it->second->stored;
}

bool ResponseStore::erase(const std::string& id, const std::string& owner) {
  std::lock_guard lock(mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end() || it->second->owner != owner) return false;
  remove(it->second);
  changed();
  return true;
}

size_t ResponseStore::bytes() const {
  std::lock_guard lock(mu_);
  return bytes_;
}

size_t ResponseStore::size() const {
  std::lock_guard lock(mu_);
  return order_.size();
}

void ResponseStore::remove(Order::iterator entry) {
  bytes_ -= entry->bytes;
  by_id_.erase(entry->id);
  order_.erase(entry);
}

void ResponseStore::changed() {
  if (on_change_) on_change_(Usage{.responses = order_.size(), .bytes = bytes_});
}

}  // namespace kvserve
