#include "engine/token_constraint.h"

#include <algorithm>
#include <map>
#include <utility>

#include "engine/tokenizer.h"

namespace kvserve {

TokenVocabulary::TokenVocabulary(std::vector<std::string> token_bytes, int vocab_size,
                                 std::vector<TokenId> eos_ids)
    : token_bytes_(std::move(token_bytes)), vocab_size_(vocab_size), eos_ids_(std::move(eos_ids)) {
  token_bytes_.resize(static_cast<size_t>(vocab_size_));
  std::erase_if(eos_ids_, [&](TokenId id) { return id < 0 || id >= vocab_size_; });
  // Build the trie with ordered children first, then lay it out flat (one allocation per array).
  struct BuildNode {
    std::map<uint8_t, uint32_t> children;
    std::vector<TokenId> tokens;
  };
  std::vector<BuildNode> build(1);
  for (TokenId id = 0; id < vocab_size_; ++id) {
    uint32_t node = 0;
    for (const char c : token_bytes_[static_cast<size_t>(id)]) {
      const auto [it, inserted] = build[node].children.emplace(static_cast<uint8_t>(c), 0);
      if (inserted) {
        it->second = static_cast<uint32_t>(build.size());
        build.emplace_back();
      }
      node = it->second;
    }
    if (node != 0) build[node].tokens.push_back(id);  // an empty token (control) is never allowed
  }
  nodes_.resize(build.size());
  for (size_t i = 0; i < build.size(); ++i) {
    Node& n = nodes_[i];
    n.first_edge = static_cast<uint32_t>(edges_.size());
    n.num_edges = static_cast<uint32_t>(build[i].children.size());
    for (const auto& [byte, child] : build[i].children)
      edges_.push_back(Edge{byte, child});
    n.first_token = static_cast<uint32_t>(node_tokens_.size());
    n.num_tokens = static_cast<uint32_t>(build[i].tokens.size());
    node_tokens_.insert(node_tokens_.end(), build[i].tokens.begin(), build[i].tokens.end());
  }
}

std::shared_ptr<const TokenVocabulary> TokenVocabulary::from_tokenizer(const Tokenizer& tokenizer,
                                                                       int vocab_size,
                                                                       std::vector<TokenId> eos_ids) {
  std::vector<std::string> bytes(static_cast<size_t>(vocab_size));
  for (TokenId id = 0; id < vocab_size; ++id)
    bytes[static_cast<size_t>(id)] = tokenizer.token_bytes(id);
  return std::make_shared<const TokenVocabulary>(std::move(bytes), vocab_size, std::move(eos_ids));
}

size_t TokenVocabulary::add_allowed_tokens(const RegexDfa& dfa, int32_t state,
                                           std::span<uint32_t> mask) const {
  // Depth-first over the trie, carrying the automaton's state: a byte that leads nowhere prunes
  // every token below it at once.
  std::vector<std::pair<uint32_t, int32_t>> stack{{0u, state}};
  size_t visits = 0;
  while (!stack.empty()) {
    const auto [node_index, s] = stack.back();
    stack.pop_back();
    ++visits;
    const Node& node = nodes_[node_index];
    for (uint32_t t = node.first_token; t < node.first_token + node.num_tokens; ++t) {
      const auto id = static_cast<uint32_t>(node_tokens_[t]);
      mask[id / 32] |= 1u << (id % 32);
    }
    for (uint32_t e = node.first_edge; e < node.first_edge + node.num_edges; ++e) {
      const int32_t next = dfa.next(s, edges_[e].byte);
      if (next != RegexDfa::kDead) stack.emplace_back(edges_[e].child, next);
    }
  }
  return visits;
}

Status TokenConstraint::compile(std::string_view pattern, std::shared_ptr<const TokenVocabulary> vocab,
                                const ConstraintLimits& limits, std::shared_ptr<const TokenConstraint>* out) {
  auto c = std::make_shared<TokenConstraint>();
  if (Status s = RegexDfa::compile(pattern, limits.regex, &c->dfa_); !s.ok()) return s;
  c->vocab_ = std::move(vocab);
  const size_t words = static_cast<size_t>(c->vocab_->mask_words());
  const size_t num_states = static_cast<size_t>(c->dfa_.num_states());

  // Masks are deduplicated by content: states inside a long string or a repeated item share one.
  std::unordered_map<std::string, uint32_t> index_of_mask;
  std::vector<uint32_t> mask(words);
  size_t visits = 0;
  c->mask_of_state_.resize(num_states);
  for (size_t s = 0; s < num_states; ++s) {
    std::fill(mask.begin(), mask.end(), 0u);
    const auto state = static_cast<int32_t>(s);
    visits += c->vocab_->add_allowed_tokens(c->dfa_, state, mask);
    if (visits > limits.max_trie_visits)
      return Status::InvalidArgument(
          "response_format: the pattern is too large to compile for this vocabulary (over " +
          std::to_string(limits.max_trie_visits) + " steps); bound its repeats or simplify it");
    if (c->dfa_.accepting(state)) {
      for (const TokenId eos : c->vocab_->eos_ids())
        mask[static_cast<size_t>(eos) / 32] |= 1u << (eos % 32);
    }
    std::string key(reinterpret_cast<const char*>(mask.data()), words * sizeof(uint32_t));
    const auto [it, inserted] =
        index_of_mask.emplace(std::move(key), static_cast<uint32_t>(index_of_mask.size()));
    if (inserted) {
      if ((c->masks_.size() + words) * sizeof(uint32_t) > limits.max_mask_bytes)
        return Status::InvalidArgument("response_format: the pattern needs over " +
                                       std::to_string(limits.max_mask_bytes >> 20) +
                                       " MiB of token masks for this vocabulary; simplify it");
      c->masks_.insert(c->masks_.end(), mask.begin(), mask.end());
    }
    c->mask_of_state_[s] = it->second;
  }
  const std::span<const uint32_t> first = c->allowed(c->start());
  if (std::all_of(first.begin(), first.end(), [](uint32_t w) { return w == 0; }))
    return Status::InvalidArgument(
        "response_format: no token of this model can begin a text that matches the pattern");
  *out = std::move(c);
  return Status::Ok();
}

std::span<const uint32_t> TokenConstraint::allowed(int32_t state) const {
  if (state == kDead) return {};
  const size_t words = static_cast<size_t>(vocab_->mask_words());
  return std::span<const uint32_t>(masks_).subspan(mask_of_state_[static_cast<size_t>(state)] * words, words);
}

int32_t TokenConstraint::advance(int32_t state, TokenId token) const {
  if (state == kDead || token < 0 || token >= vocab_->vocab_size()) return kDead;
  const std::string& bytes = vocab_->bytes(token);
  if (bytes.empty()) return kDead;  // EOS (or a token that was never allowed)
  return dfa_.walk(state, bytes);
}

size_t TokenConstraint::memory_bytes() const {
  return masks_.size() * sizeof(uint32_t) + mask_of_state_.size() * sizeof(uint32_t) +
         static_cast<size_t>(dfa_.num_states()) * (256 * sizeof(int32_t) + 1);
}

ConstraintCache::ConstraintCache(std::shared_ptr<const TokenVocabulary> vocab, ConstraintLimits limits,
                                 size_t max_bytes)
    : vocab_(std::move(vocab)), limits_(limits), max_bytes_(max_bytes) {}

Status ConstraintCache::get(const std::string& pattern, std::shared_ptr<const TokenConstraint>* out) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (const auto it = by_pattern_.find(pattern); it != by_pattern_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      *out = it->second->second;
      return Status::Ok();
    }
  }
  // Compiled outside the lock: a large schema must not hold up requests whose pattern is cached.
  std::shared_ptr<const TokenConstraint> compiled;
  if (Status s = TokenConstraint::compile(pattern, vocab_, limits_, &compiled); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  if (const auto it = by_pattern_.find(pattern); it != by_pattern_.end()) {
    bytes_ -= it->second->second->memory_bytes();
    lru_.erase(it->second);
    by_pattern_.erase(it);
  }
  lru_.emplace_front(pattern, compiled);
  by_pattern_[pattern] = lru_.begin();
  bytes_ += compiled->memory_bytes();
  // The newest entry stays even when it alone is over the budget: the request needs it anyway.
  while (bytes_ > max_bytes_ && lru_.size() > 1) {
    bytes_ -= lru_.back().second->memory_bytes();
    by_pattern_.erase(lru_.back().first);
    lru_.pop_back();
  }
  *out = std::move(compiled);
  return Status::Ok();
}

size_t ConstraintCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lru_.size();
}

}  // namespace kvserve
