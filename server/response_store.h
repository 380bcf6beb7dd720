// The Responses API's stored responses (POST /v1/responses with `store`, the default): what a
// later request's previous_response_id continues, and what GET /v1/responses/{id} reads back.
// Held in memory, bounded in bytes: the least recently used responses go first when a new one
// would not fit, and all are gone when the server restarts. A response belongs to the API key
// (Authorization header) that created it: another key finds nothing under its id.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

namespace kvserve {

class ResponseStore {
 public:
  struct Stored {
    nlohmann::ordered_json response;  // the response object, as GET returns it
    // The conversation a next turn continues: the items this response's input stood for (the
    // previous response's items, then its own input), then its output items.
    nlohmann::ordered_json items = nlohmann::ordered_json::array();
    size_t input_items = 0;  // how many of `items` were its input (GET .../input_items)
  };

  struct Usage {
    size_t responses = 0, bytes = 0;
  };
  // `on_change`, if set, sees the usage after every change, in order (it runs under the store's
  // lock: it must not call back into the store).
  explicit ResponseStore(size_t capacity_bytes, std::function<void(Usage)> on_change = {})
      : capacity_bytes_(capacity_bytes), on_change_(std::move(on_change)) {}

  // Stores `stored` under `id` for `owner`, replacing what `id` held, and evicts the least
  // recently used others until it fits. False (nothing stored) when it alone is over the capacity.
  bool put(const std::string& id, const std::string& owner, Stored stored);
  // The response stored under `id` for `owner` (now the most recently used), or null.
  std::shared_ptr<const Stored> find(const std::string& id, const std::string& owner);
  // Deletes it; false when `id` holds nothing for `owner`.
  bool erase(const std::string& id, const std::string& owner);

  size_t capacity_bytes() const { return capacity_bytes_; }
  size_t bytes() const;
  size_t size() const;

 private:
  struct Entry {
    std::string id, owner;
    std::shared_ptr<const Stored> stored;
    size_t bytes = 0;
  };
  using Order = std::list<Entry>;  // most recently used first

  void remove(Order::iterator entry);  // mu_ held
  void changed();                      // mu_ held

  const size_t capacity_bytes_;
  const std::function<void(Usage)> on_change_;
  mutable std::mutex mu_;
  Order order_;
  std::unordered_map<std::string, Order::iterator> by_id_;
  size_t bytes_ = 0;
};

}  // namespace kvserve
