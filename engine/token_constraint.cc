#include "engine/token_constraint.h"

#include <algorithm>
#include <bit>
#include <climits>
#include <cstring>
#include <map>
#include <utility>

#include "engine/tokenizer.h"

namespace kvserve {

TokenVocabulary::Trie TokenVocabulary::Trie::build(const std::vector<std::string>& token_bytes,
                                                   size_t min_bytes, size_t max_bytes) {
  // Build the trie with ordered children first, then lay it out flat (one allocation per array).
  struct BuildNode {
    std::map<uint8_t, uint32_t> children;
    std::vector<TokenId> tokens;
  };
  std::vector<BuildNode> build(1);
  for (size_t id = 0; id < token_bytes.size(); ++id) {
    const std::string& bytes = token_bytes[id];
    if (bytes.size() < min_bytes || bytes.size() > max_bytes) continue;
    uint32_t node = 0;
    for (const char c : bytes) {
      const auto [it, inserted] = build[node].children.emplace(static_cast<uint8_t>(c), 0);
      if (inserted) {
        it->second = static_cast<uint32_t>(build.size());
        build.emplace_back();
      }
      node = it->second;
    }
    build[node].tokens.push_back(static_cast<TokenId>(id));
  }
  Trie trie;
  trie.nodes.resize(build.size());
  for (size_t i = 0; i < build.size(); ++i) {
    Node& n = trie.nodes[i];
    n.first_edge = static_cast<uint32_t>(trie.edges.size());
    n.num_edges = static_cast<uint32_t>(build[i].children.size());
    for (const auto& [byte, child] : build[i].children)
      trie.edges.push_back(Edge{byte, child});
    n.first_token = static_cast<uint32_t>(trie.tokens.size());
    n.num_tokens = static_cast<uint32_t>(build[i].tokens.size());
    trie.tokens.insert(trie.tokens.end(), build[i].tokens.begin(), build[i].tokens.end());
  }
  return trie;
}

TokenVocabulary::TokenVocabulary(std::vector<std::string> token_bytes, int vocab_size,
                                 std::vector<TokenId> eos_ids)
    : token_bytes_(std::move(token_bytes)), vocab_size_(vocab_size), eos_ids_(std::move(eos_ids)) {
  token_bytes_.resize(static_cast<size_t>(vocab_size_));
  std::erase_if(eos_ids_, [&](TokenId id) { return id < 0 || id >= vocab_size_; });
  for (const std::string& bytes : token_bytes_) {
    max_token_bytes_ = std::max(max_token_bytes_, static_cast<int>(bytes.size()));
    if (bytes.size() == 1) has_byte_token_[static_cast<uint8_t>(bytes[0])] = true;
  }
  // An empty token (control) is in neither trie: it is never allowed.
  short_ = Trie::build(token_bytes_, 1, kShortTokenBytes);
  long_ = Trie::build(token_bytes_, kShortTokenBytes + 1, SIZE_MAX);
}

std::shared_ptr<const TokenVocabulary> TokenVocabulary::from_tokenizer(const Tokenizer& tokenizer,
                                                                       int vocab_size,
                                                                       std::vector<TokenId> eos_ids) {
  std::vector<std::string> bytes(static_cast<size_t>(vocab_size));
  for (TokenId id = 0; id < vocab_size; ++id)
    bytes[static_cast<size_t>(id)] = tokenizer.token_bytes(id);
  return std::make_shared<const TokenVocabulary>(std::move(bytes), vocab_size, std::move(eos_ids));
}

template <typename OnNode>
size_t TokenVocabulary::Trie::walk(const RegexDfa& dfa, int32_t state, OnNode&& on_node) const {
  // Depth-first over the trie, carrying the automaton's state: a byte that leads nowhere prunes
  // every token below it at once.
  if (nodes.size() == 1) return 0;  // no tokens at all
  std::vector<std::pair<uint32_t, int32_t>> stack{{0u, state}};
  size_t visits = 0;
  while (!stack.empty()) {
    const auto [node_index, s] = stack.back();
    stack.pop_back();
    ++visits;
    const Node& node = nodes[node_index];
    if (node.num_tokens != 0) on_node(s, node.first_token, node.first_token + node.num_tokens);
    for (uint32_t e = node.first_edge; e < node.first_edge + node.num_edges; ++e) {
      const int32_t next = dfa.next(s, edges[e].byte);
      if (next != RegexDfa::kDead) stack.emplace_back(edges[e].child, next);
    }
  }
  return visits;
}

size_t TokenVocabulary::add_allowed_tokens(const RegexDfa& dfa, int32_t state, std::span<const uint8_t> live,
                                           std::span<uint32_t> mask, Tokens which) const {
  size_t visits = 0;
  for (const Trie* trie : {&short_, &long_}) {
    if ((trie == &short_ && which == Tokens::kLong) || (trie == &long_ && which == Tokens::kShort)) continue;
    visits += trie->walk(dfa, state, [&](int32_t s, uint32_t first, uint32_t end) {
      if (live[static_cast<size_t>(s)] == 0) return;
      for (uint32_t t = first; t < end; ++t) {
        const auto id = static_cast<uint32_t>(trie->tokens[t]);
        mask[id / 32] |= 1u << (id % 32);
      }
    });
  }
  return visits;
}

size_t TokenVocabulary::add_token_targets(const RegexDfa& dfa, int32_t state, std::vector<uint8_t>& seen,
                                          std::vector<int32_t>* targets) const {
  const size_t first = targets->size();
  const auto add = [&](int32_t s, uint32_t, uint32_t) {
    if (seen[static_cast<size_t>(s)] != 0) return;
    seen[static_cast<size_t>(s)] = 1;
    targets->push_back(s);
  };
  const size_t visits = short_.walk(dfa, state, add) + long_.walk(dfa, state, add);
  for (size_t i = first; i < targets->size(); ++i)
    seen[static_cast<size_t>((*targets)[i])] = 0;
  return visits;
}

namespace {

constexpr uint64_t kHashMul = 0x9E3779B97F4A7C15ull;

// A short row of ints (refine()'s signatures).
uint64_t hash_row(std::span<const int32_t> row) {
  uint64_t h = 0x243F6A8885A308D3ull ^ row.size();
  for (const int32_t w : row) {
    h = (h ^ static_cast<uint32_t>(w)) * kHashMul;
    h ^= h >> 29;
  }
  return h;
}

// A mask (16 KiB at a 128k vocabulary): four independent lanes of 64 bits, so that the multiplies
// overlap; a hash, not a key, since equal hashes are compared in full.
uint64_t hash_mask(std::span<const uint32_t> mask) {
  uint64_t lane[4] = {0x243F6A8885A308D3ull, 0x13198A2E03707344ull, 0xA4093822299F31D0ull,
                      0x082EFA98EC4E6C89ull};
  size_t i = 0;
  for (; i + 8 <= mask.size(); i += 8) {
    for (int k = 0; k < 4; ++k) {
      uint64_t x;
      std::memcpy(&x, &mask[i + 2 * static_cast<size_t>(k)], sizeof x);
      lane[k] = std::rotl(lane[k] + x, 27) * kHashMul;
    }
  }
  for (; i < mask.size(); ++i)
    lane[0] = std::rotl(lane[0] + mask[i], 27) * kHashMul;
  uint64_t h = mask.size();
  for (const uint64_t l : lane) {
    h = (h ^ l) * kHashMul;
    h ^= h >> 32;
  }
  return h;
}

// The bytes the automaton cannot tell apart: b1 and b2 share a class when next(s, b1) ==
// next(s, b2) in every state s and either both or neither is a token of its own (so that the
// liveness pass below can go by class too). Typically a few dozen classes.
struct ByteClasses {
  std::array<uint16_t, 256> of_byte{};
  std::vector<uint8_t> representative;  // the smallest byte of each class
};

ByteClasses byte_classes(const RegexDfa& dfa, const TokenVocabulary& vocab) {
  ByteClasses bc;
  int num = 0;
  int id_of[2] = {-1, -1};
  for (int b = 0; b < 256; ++b) {
    const int k = vocab.has_byte_token(static_cast<uint8_t>(b)) ? 1 : 0;
    if (id_of[k] < 0) id_of[k] = num++;
    bc.of_byte[static_cast<size_t>(b)] = static_cast<uint16_t>(id_of[k]);
  }
  constexpr int32_t kUnset = INT32_MIN;
  std::vector<int32_t> first_next(256);
  for (int32_t s = 0; s < dfa.num_states(); ++s) {
    std::fill(first_next.begin(), first_next.begin() + num, kUnset);
    bool uniform = true;
    for (int b = 0; b < 256 && uniform; ++b) {
      int32_t& seen = first_next[bc.of_byte[static_cast<size_t>(b)]];
      const int32_t t = dfa.next(s, static_cast<uint8_t>(b));
      if (seen == kUnset) seen = t;
      uniform = seen == t;
    }
    if (uniform) continue;
    // Split: one class per (old class, target in s), numbered in byte order.
    std::map<std::pair<uint16_t, int32_t>, uint16_t> ids;
    for (int b = 0; b < 256; ++b) {
      uint16_t& cls = bc.of_byte[static_cast<size_t>(b)];
      cls =
          ids.emplace(std::pair(cls, dfa.next(s, static_cast<uint8_t>(b))), static_cast<uint16_t>(ids.size()))
              .first->second;
    }
    num = static_cast<int>(ids.size());
  }
  bc.representative.assign(static_cast<size_t>(num), 0);
  for (int b = 255; b >= 0; --b)
    bc.representative[bc.of_byte[static_cast<size_t>(b)]] = static_cast<uint8_t>(b);
  return bc;
}

// Refines `block` (states to block ids 0..*num_blocks-1) by Moore's rounds: after round k, two
// states share a block when every string of at most k bytes leads both to states of the same
// initial block (kDead, its own block, included). Stops after `rounds` rounds or once a round
// splits nothing.
void refine(std::span<const int32_t> next_by_class, size_t num_classes, int rounds,
            std::vector<int32_t>* block, int32_t* num_blocks) {
  const size_t n = block->size();
  const size_t width = num_classes + 1;
  std::vector<int32_t> rows(n * width);
  std::vector<int32_t> refined(n);
  std::unordered_map<uint64_t, int32_t> first_with;  // row hash -> the first state with that row
  for (int round = 0; round < rounds && static_cast<size_t>(*num_blocks) < n; ++round) {
    for (size_t s = 0; s < n; ++s) {
      int32_t* row = &rows[s * width];
      row[0] = (*block)[s];
      for (size_t c = 0; c < num_classes; ++c) {
        const int32_t t = next_by_class[s * num_classes + c];
        row[c + 1] = t == RegexDfa::kDead ? -1 : (*block)[static_cast<size_t>(t)];
      }
    }
    first_with.clear();
    first_with.reserve(static_cast<size_t>(*num_blocks) * 2);
    int32_t count = 0;
    for (size_t s = 0; s < n; ++s) {
      const std::span<const int32_t> row(&rows[s * width], width);
      // Open addressing over the hash: an equal row follows the same probe sequence, and meets
      // its first occurrence before any free key (entries are never removed).
      for (uint64_t h = hash_row(row);; h = (h + 1) * kHashMul ^ (h >> 31)) {
        const auto [it, inserted] = first_with.try_emplace(h, static_cast<int32_t>(s));
        if (inserted) {
          refined[s] = count++;
          break;
        }
        const auto other = static_cast<size_t>(it->second);
        if (std::equal(row.begin(), row.end(), rows.begin() + static_cast<ptrdiff_t>(other * width))) {
          refined[s] = refined[other];
          break;
        }
      }
    }
    const bool stable = count == *num_blocks;  // rounds only split blocks: as many means the same
    block->swap(refined);
    *num_blocks = count;
    if (stable) break;
  }
}

}  // namespace

Status TokenConstraint::compile(std::string_view pattern, std::shared_ptr<const TokenVocabulary> vocab,
                                const ConstraintLimits& limits, std::shared_ptr<const TokenConstraint>* out) {
  return compile_impl(pattern, std::move(vocab), limits, /*share_by_class=*/true, out);
}

Status TokenConstraint::compile_per_state(std::string_view pattern,
                                          std::shared_ptr<const TokenVocabulary> vocab,
                                          const ConstraintLimits& limits,
                                          std::shared_ptr<const TokenConstraint>* out) {
  return compile_impl(pattern, std::move(vocab), limits, /*share_by_class=*/false, out);
}

// Compiling, in three passes over the automaton (n states, C byte classes, L the longest token):
//
// 1. Token liveness. Live is the least set of states that holds the accepting ones and every
//    state from which some token leads into Live: the states from which tokens can still finish a
//    match. A token is allowed only when it leads into Live, so every state a sequence reaches is
//    live, and a live state that is not accepting has an allowed token: generation is never stuck
//    mid-pattern (nor sent down a path it can never finish).
//    First, cheaply, a state is live when single-byte tokens alone lead it to an accepting state:
//    a backward search over the automaton's edges whose byte is a token (O(n C)). With a
//    vocabulary that has every byte the pattern uses (byte-level BPE, SentencePiece with byte
//    fallback) that is every state, and pass 1 ends there. Otherwise each state it leaves out is
//    walked through the tries once, to list the states its tokens lead to, and a backward search
//    over those edges, from every live state, adds the rest of Live: a state added has a token
//    into Live, and (by induction on the shortest token path to an accepting state) every state
//    of Live is added.
//
// 2. Sharing. A state's mask is {tokens w : next(s, w) in Live}, plus EOS when s is accepting, and
//    a token has at most L bytes. So s and s' have the same mask when, for every string w of at
//    most L bytes, next(s, w) and next(s', w) fall in the same block of the partition {kDead, not
//    live, live and accepting, live and not accepting}. Moore's partition refinement computes
//    exactly that relation, in L rounds (fewer when a round splits nothing) of O(n C) each, since
//    the bytes of one class lead everywhere alike. This holds whether all states are live or not:
//    liveness is part of the initial partition. A state inside a bounded string is told apart
//    from its neighbours only within L bytes of the bound: bench/constraint_bench.cc's string of
//    at most 700 characters has 9103 states and 144 blocks (L = 12).
//    A few long tokens (a run of 128 spaces) would make L, and with it the blocks, much larger;
//    so the partition after min(L, kShortTokenBytes) rounds (coarse) decides the short tokens'
//    part of the mask by the same argument, and the one after L rounds (fine, a refinement of
//    it) the long tokens' part.
//
// 3. Masks. The short tokens' trie is walked once per coarse block, and the long tokens' once per
//    fine block, from any of its states (the first). A block that is not live has the empty mask
//    (a token into Live would make it live). Identical masks are stored once.
//
// compile_per_state() skips pass 2 (every state its own block): the reference for the sharing.
Status TokenConstraint::compile_impl(std::string_view pattern, std::shared_ptr<const TokenVocabulary> vocab,
                                     const ConstraintLimits& limits, bool share_by_class,
                                     std::shared_ptr<const TokenConstraint>* out) {
  auto c = std::make_shared<TokenConstraint>();
  if (Status s = RegexDfa::compile(pattern, limits.regex, &c->dfa_); !s.ok()) return s;
  c->vocab_ = std::move(vocab);
  const TokenVocabulary& v = *c->vocab_;
  const RegexDfa& dfa = c->dfa_;
  const size_t words = static_cast<size_t>(v.mask_words());
  const auto n = static_cast<size_t>(dfa.num_states());
  size_t visits = 0;
  const auto too_large = [&] {
    return Status::InvalidArgument(
        "response_format: the pattern is too large to compile for this vocabulary (over " +
        std::to_string(limits.max_trie_visits) + " steps); bound its repeats or simplify it");
  };

  const ByteClasses classes = byte_classes(dfa, v);
  const size_t num_classes = classes.representative.size();
  std::vector<int32_t> next_by_class(n * num_classes);
  for (size_t s = 0; s < n; ++s) {
    for (size_t k = 0; k < num_classes; ++k)
      next_by_class[s * num_classes + k] = dfa.next(static_cast<int32_t>(s), classes.representative[k]);
  }

  // Pass 1: liveness. Edges target -> source, as CSR: edges[start[t], start[t + 1]).
  std::vector<uint8_t> live(n, 0);
  std::vector<int32_t> queue;
  const auto search_backward = [&](const std::vector<uint32_t>& start, const std::vector<int32_t>& edges) {
    for (size_t i = 0; i < queue.size(); ++i) {
      const auto t = static_cast<size_t>(queue[i]);
      for (uint32_t e = start[t]; e < start[t + 1]; ++e) {
        const auto src = static_cast<size_t>(edges[e]);
        if (live[src] == 0) {
          live[src] = 1;
          queue.push_back(edges[e]);
        }
      }
    }
  };
  const auto build_reverse = [&](const std::vector<std::pair<int32_t, int32_t>>& pairs,  // (target, source)
                                 std::vector<uint32_t>* start, std::vector<int32_t>* edges) {
    start->assign(n + 1, 0);
    for (const auto& [t, src] : pairs)
      ++(*start)[static_cast<size_t>(t) + 1];
    for (size_t i = 0; i < n; ++i)
      (*start)[i + 1] += (*start)[i];
    edges->resize(pairs.size());
    std::vector<uint32_t> fill(start->begin(), start->end() - 1);
    for (const auto& [t, src] : pairs)
      (*edges)[fill[static_cast<size_t>(t)]++] = src;
  };
  {
    std::vector<std::pair<int32_t, int32_t>> pairs;
    for (size_t s = 0; s < n; ++s) {
      for (size_t k = 0; k < num_classes; ++k) {
        const int32_t t = next_by_class[s * num_classes + k];
        if (t != kDead && v.has_byte_token(classes.representative[k]))
          pairs.emplace_back(t, static_cast<int32_t>(s));
      }
      if (dfa.accepting(static_cast<int32_t>(s))) {
        live[s] = 1;
        queue.push_back(static_cast<int32_t>(s));
      }
    }
    std::vector<uint32_t> start;
    std::vector<int32_t> edges;
    build_reverse(pairs, &start, &edges);
    search_backward(start, edges);
  }
  if (queue.size() < n) {
    std::vector<std::pair<int32_t, int32_t>> pairs;
    std::vector<uint8_t> seen(n, 0);
    std::vector<int32_t> targets;
    for (size_t s = 0; s < n; ++s) {
      if (live[s] != 0) continue;
      targets.clear();
      visits += v.add_token_targets(dfa, static_cast<int32_t>(s), seen, &targets);
      if (visits > limits.max_trie_visits) return too_large();
      for (const int32_t t : targets)
        pairs.emplace_back(t, static_cast<int32_t>(s));
    }
    std::vector<uint32_t> start;
    std::vector<int32_t> edges;
    build_reverse(pairs, &start, &edges);
    // Every live state so far is a source of the search again: the new edges may lead into any.
    queue.clear();
    for (size_t s = 0; s < n; ++s) {
      if (live[s] != 0) queue.push_back(static_cast<int32_t>(s));
    }
    search_backward(start, edges);
  }

  // Pass 2: the blocks of states that share their short tokens' allowed set (coarse) and those
  // that share the whole mask (fine, each inside a coarse one).
  std::vector<int32_t> coarse(n);
  int32_t num_coarse = 0;
  if (share_by_class) {
    int32_t id_of[3] = {-1, -1, -1};  // not live, live and accepting, live and not accepting
    for (size_t s = 0; s < n; ++s) {
      const int k = live[s] == 0 ? 0 : dfa.accepting(static_cast<int32_t>(s)) ? 1 : 2;
      if (id_of[k] < 0) id_of[k] = num_coarse++;
      coarse[s] = id_of[k];
    }
    refine(next_by_class, num_classes, std::min(v.max_token_bytes(), TokenVocabulary::kShortTokenBytes),
           &coarse, &num_coarse);
  } else {
    for (size_t s = 0; s < n; ++s)
      coarse[s] = static_cast<int32_t>(s);
    num_coarse = static_cast<int32_t>(n);
  }
  std::vector<int32_t> fine = coarse;
  int32_t num_fine = num_coarse;
  if (share_by_class && v.has_long_tokens())
    refine(next_by_class, num_classes, v.max_token_bytes() - TokenVocabulary::kShortTokenBytes, &fine,
           &num_fine);

  // Pass 3: a walk of the short tokens per coarse block, then of the long ones per fine block in
  // it. Masks are deduplicated by content, keyed by a hash of it.
  std::vector<uint32_t> by_coarse(n);  // the states, coarse block after coarse block
  {
    std::vector<uint32_t> start(static_cast<size_t>(num_coarse) + 1, 0);
    for (size_t s = 0; s < n; ++s)
      ++start[static_cast<size_t>(coarse[s]) + 1];
    for (size_t i = 0; i < static_cast<size_t>(num_coarse); ++i)
      start[i + 1] += start[i];
    for (size_t s = 0; s < n; ++s)
      by_coarse[start[static_cast<size_t>(coarse[s])]++] = static_cast<uint32_t>(s);
  }
  std::unordered_multimap<uint64_t, uint32_t> index_of_mask;
  std::vector<uint8_t> mask_empty;  // per distinct mask
  std::vector<int64_t> mask_of_fine(static_cast<size_t>(num_fine), -1);
  std::vector<uint32_t> short_mask(words);
  std::vector<uint32_t> mask(words);
  c->mask_of_state_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const size_t s = by_coarse[i];
    const auto state = static_cast<int32_t>(s);
    if (i == 0 || coarse[by_coarse[i - 1]] != coarse[s]) {  // the first state of a coarse block
      std::fill(short_mask.begin(), short_mask.end(), 0u);
      if (live[s] != 0) {
        visits += v.add_allowed_tokens(dfa, state, live, short_mask, TokenVocabulary::Tokens::kShort);
        if (visits > limits.max_trie_visits) return too_large();
      }
    }
    int64_t& index = mask_of_fine[static_cast<size_t>(fine[s])];
    if (index < 0) {
      mask = short_mask;
      if (live[s] != 0) {
        visits += v.add_allowed_tokens(dfa, state, live, mask, TokenVocabulary::Tokens::kLong);
        if (visits > limits.max_trie_visits) return too_large();
        if (dfa.accepting(state)) {
          for (const TokenId eos : v.eos_ids())
            mask[static_cast<size_t>(eos) / 32] |= 1u << (eos % 32);
        }
      }
      const uint64_t h = hash_mask(mask);
      for (auto [it, end] = index_of_mask.equal_range(h); it != end; ++it) {
        if (std::equal(mask.begin(), mask.end(),
                       c->masks_.begin() + static_cast<ptrdiff_t>(it->second * words))) {
          index = it->second;
          break;
        }
      }
      if (index < 0) {
        if ((c->masks_.size() + words) * sizeof(uint32_t) > limits.max_mask_bytes)
          return Status::InvalidArgument("response_format: the pattern needs over " +
                                         std::to_string(limits.max_mask_bytes >> 20) +
                                         " MiB of token masks for this vocabulary; simplify it");
        index = static_cast<int64_t>(mask_empty.size());
        c->masks_.insert(c->masks_.end(), mask.begin(), mask.end());
        mask_empty.push_back(std::all_of(mask.begin(), mask.end(), [](uint32_t w) { return w == 0; }) ? 1
                                                                                                      : 0);
        index_of_mask.emplace(h, static_cast<uint32_t>(index));
      }
    }
    c->mask_of_state_[s] = static_cast<uint32_t>(index);
  }
  c->flags_.resize(n);
  for (size_t s = 0; s < n; ++s) {
    c->flags_[s] = static_cast<uint8_t>((mask_empty[c->mask_of_state_[s]] != 0 ? kExhausted : 0) |
                                        (live[s] == 0 ? kTokenDead : 0));
  }
  if (c->exhausted(c->start()))
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
  const int32_t next = dfa_.walk(state, bytes);
  if (next == kDead || (flags_[static_cast<size_t>(next)] & kTokenDead) != 0) return kDead;
  return next;
}

size_t TokenConstraint::memory_bytes() const {
  return masks_.size() * sizeof(uint32_t) + mask_of_state_.size() * sizeof(uint32_t) + flags_.size() +
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
      const Entry& e = *it->second;
      if (!e.constraint) return e.status;
      *out = e.constraint;
      return Status::Ok();
    }
  }
  // Compiled outside the lock: a large schema must not hold up requests whose pattern is cached.
  std::shared_ptr<const TokenConstraint> compiled;
  Status status = TokenConstraint::compile(pattern, vocab_, limits_, &compiled);
  if (!status.ok()) compiled.reset();
  // A failure keeps its pattern twice (the entry and the map's key) and the message.
  const size_t bytes = status.ok() ? compiled->memory_bytes() : kFailureBytes + 2 * pattern.size();
  std::lock_guard<std::mutex> lock(mu_);
  if (const auto it = by_pattern_.find(pattern); it != by_pattern_.end()) {
    bytes_ -= it->second->bytes;
    lru_.erase(it->second);
    by_pattern_.erase(it);
  }
  lru_.push_front(Entry{pattern, compiled, status, bytes});
  by_pattern_[pattern] = lru_.begin();
  bytes_ += bytes;
  // The newest entry stays even when it alone is over the budget: the request needs it anyway.
  while (bytes_ > max_bytes_ && lru_.size() > 1) {
    bytes_ -= lru_.back().bytes;
    by_pattern_.erase(lru_.back().pattern);
    lru_.pop_back();
  }
  if (status.ok()) *out = std::move(compiled);
  return status;
}

size_t ConstraintCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lru_.size();
}

}  // namespace kvserve
