#include "server/metrics.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

namespace kvserve {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// A small, strict reader of the text exposition format (0.0.4), written from the format's
// description, so renders are checked by something other than the code that wrote them.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;  // unescaped values
  double value = 0;
};
struct Family {
  bool has_help = false, has_type = false;
  std::string type;
  std::vector<Sample> samples;
};
struct Exposition {
  std::map<std::string, Family> families;
  std::vector<std::string> errors;

  double value(const std::string& name, const std::map<std::string, std::string>& labels = {}) const {
    for (const auto& [family_name, family] : families) {
      for (const Sample& s : family.samples) {
        if (s.name == name && s.labels == labels) return s.value;
      }
    }
    ADD_FAILURE() << "no sample " << name;
    return kNaN;
  }
};

bool valid_name(std::string_view s, bool metric) {
  auto head = [&](char c) {
    return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || (metric && c == ':');
  };
  if (s.empty() || !head(s[0])) return false;
  for (char c : s) {
    if (!head(c) && !std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

std::optional<double> parse_value(const std::string& s) {
  if (s == "+Inf") return kInf;
  if (s == "-Inf") return -kInf;
  if (s == "NaN") return kNaN;
  // strtod also takes "inf", "nan" and hex, which Prometheus does not.
  if (s.empty() || s.find_first_not_of("0123456789.eE+-") != std::string::npos) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size()) return std::nullopt;
  return v;
}

// Reads an escaped string up to `stop` (unescaped), or to the end when stop is 0. Label values
// may escape \\, \" and \n; HELP text \\ and \n.
std::optional<std::string> unescape(std::string_view s, std::size_t& pos, char stop, bool label) {
  std::string out;
  while (pos < s.size() && s[pos] != stop) {
    char c = s[pos++];
    if (c == '\\') {
      const char next = pos < s.size() ? s[pos++] : '?';
      if (next != 'n' && next != '\\' && !(label && next == '"')) return std::nullopt;
      c = next == 'n' ? '\n' : next;
    }
    out += c;
  }
  if (stop != 0 && pos == s.size()) return std::nullopt;
  return out;
}

Exposition parse(const std::string& text) {
  Exposition e;
  if (text.empty() || text.back() != '\n') e.errors.push_back("text does not end with a newline");
  std::string current;         // the family whose lines are being read
  std::set<std::string> done;  // families whose lines have ended
  std::istringstream in(text);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    auto fail = [&](const std::string& why) {
      e.errors.push_back("line " + std::to_string(n) + " (" + why + "): " + line);
    };
    const bool help = line.starts_with("# HELP "), type = line.starts_with("# TYPE ");
    if (help || type) {
      const std::size_t space = line.find(' ', 7);
      const std::string name = line.substr(7, space - 7);
      if (space == std::string::npos || !valid_name(name, true)) {
        fail("bad metric name");
        continue;
      }
      if (name != current) {
        if (!current.empty()) done.insert(current);
        if (done.contains(name)) fail("family lines not together");
        current = name;
      }
      Family& f = e.families[name];
      std::size_t pos = space + 1;
      if (help) {
        if (f.has_help) fail("second HELP");
        if (!unescape(line, pos, 0, false)) fail("bad escape in HELP");
        f.has_help = true;
      } else {
        if (f.has_type) fail("second TYPE");
        if (!f.samples.empty()) fail("TYPE after samples");
        f.type = line.substr(pos);
        static const std::set<std::string> kTypes = {"counter", "gauge", "histogram", "summary", "untyped"};
        if (!kTypes.contains(f.type)) fail("unknown type");
        f.has_type = true;
      }
      continue;
    }
    Sample s;
    std::size_t pos = line.find_first_of("{ ");
    s.name = line.substr(0, pos);
    if (pos == std::string::npos || !valid_name(s.name, true)) {
      fail("bad sample name");
      continue;
    }
    bool ok = true;
    if (line[pos] == '{') {
      ++pos;
      while (ok && pos < line.size() && line[pos] != '}') {
        const std::size_t eq = line.find("=\"", pos);
        const std::string label = line.substr(pos, eq == std::string::npos ? 0 : eq - pos);
        pos = eq == std::string::npos ? line.size() : eq + 2;
        auto value = unescape(line, pos, '"', true);
        ok = valid_name(label, false) && value && s.labels.emplace(label, *value).second;
        ok = ok && ++pos < line.size() && (line[pos] == '}' || line[pos++] == ',');
      }
      ok = ok && pos < line.size() && line[pos++] == '}';
    }
    ok = ok && pos < line.size() && line[pos++] == ' ';
    const auto value = ok ? parse_value(line.substr(pos)) : std::nullopt;
    if (!value) {
      fail("bad labels or value");
      continue;
    }
    s.value = *value;
    Family& f = e.families[current];
    const bool histogram = f.type == "histogram";
    const bool in_family = histogram ? (s.name == current + "_bucket" || s.name == current + "_sum" ||
                                        s.name == current + "_count")
                                     : s.name == current;
    if (current.empty() || !f.has_help || !f.has_type) fail("sample before HELP and TYPE");
    if (!in_family) fail("sample outside its family " + current);
    if (histogram && s.name.ends_with("_bucket") && !s.labels.contains("le")) fail("bucket without le");
    f.samples.push_back(std::move(s));
  }
  for (const auto& [name, f] : e.families) {
    if (!f.has_help || !f.has_type) e.errors.push_back(name + ": missing HELP or TYPE");
  }
  return e;
}

// Buckets ascend in le, counts are cumulative, the last is +Inf and equals _count.
void expect_valid_histogram(const Exposition& e, const std::string& name) {
  SCOPED_TRACE(name);
  ASSERT_TRUE(e.families.contains(name));
  std::vector<std::pair<double, double>> buckets;
  for (const Sample& s : e.families.at(name).samples) {
    if (s.name == name + "_bucket") buckets.emplace_back(*parse_value(s.labels.at("le")), s.value);
  }
  ASSERT_GE(buckets.size(), 2u);
  EXPECT_EQ(buckets.back().first, kInf);
  for (std::size_t i = 1; i < buckets.size(); ++i) {
    EXPECT_LT(buckets[i - 1].first, buckets[i].first);
    EXPECT_LE(buckets[i - 1].second, buckets[i].second);
  }
  EXPECT_EQ(buckets.back().second, e.value(name + "_count"));
  const double sum = e.value(name + "_sum");
  EXPECT_TRUE(std::isfinite(sum) && sum >= 0) << sum;
}

const std::vector<std::string> kHistograms = {
    "kvserve_time_to_first_token_seconds",  "kvserve_request_queue_time_seconds",
    "kvserve_request_prefill_time_seconds", "kvserve_time_per_output_token_seconds",
    "kvserve_e2e_request_latency_seconds",  "kvserve_request_prompt_tokens",
    "kvserve_request_generation_tokens",    "kvserve_engine_step_seconds"};

// One family's lines, from its HELP line up to the next family.
std::string block(const std::string& text, const std::string& name) {
  const std::size_t begin = text.find("# HELP " + name + " ");
  if (begin == std::string::npos) return "";
  const std::size_t end = text.find("# HELP ", begin + 1);
  return text.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

TEST(Metrics, FreshRegistryExportsEveryFamilyAtZero) {
  const Metrics m;
  const Exposition e = parse(m.render());
  EXPECT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors);
  const std::set<std::string> counters = {"kvserve_requests_total",
                                          "kvserve_requests_rejected_total",
                                          "kvserve_prompt_tokens_total",
                                          "kvserve_generation_tokens_total",
                                          "kvserve_cached_prompt_tokens_total",
                                          "kvserve_engine_steps_total",
                                          "kvserve_engine_device_seconds_total",
                                          "kvserve_engine_gap_seconds_total",
                                          "kvserve_preemptions_total",
                                          "kvserve_spec_decode_draft_tokens_total",
                                          "kvserve_spec_decode_accepted_tokens_total",
                                          "kvserve_lora_requests_total",
                                          "kvserve_lora_prompt_tokens_total",
                                          "kvserve_lora_generation_tokens_total"};
  const std::set<std::string> gauges = {
      "kvserve_prefix_cache_hit_ratio", "kvserve_requests_running", "kvserve_requests_waiting",
      "kvserve_kv_blocks_capacity",     "kvserve_kv_blocks_free",   "kvserve_kv_blocks_cached",
      "kvserve_kv_cache_usage_ratio",   "kvserve_responses_stored", "kvserve_responses_stored_bytes"};
  for (const auto& [name, family] : e.families) {
    const bool histogram = std::find(kHistograms.begin(), kHistograms.end(), name) != kHistograms.end();
    EXPECT_EQ(family.type, histogram ? "histogram" : counters.contains(name) ? "counter" : "gauge") << name;
    EXPECT_TRUE(histogram || counters.contains(name) || gauges.contains(name)) << name;
    if (histogram) expect_valid_histogram(e, name);
    for (const Sample& s : family.samples)
      EXPECT_EQ(s.value, 0) << s.name;
  }
  EXPECT_EQ(e.families.size(), counters.size() + gauges.size() + kHistograms.size());
}

TEST(Metrics, RendersKnownObservationsExactly) {
  // Aggregates in field order: reason, prompt, generated, cached, ttft, tpot, e2e, queue, prefill.
  Metrics m;
  m.request_finished({"stop", 10, 1, 0, 0.02, 0.3, 0.25, 0.005, 0.015});  // one token: no TPOT observed
  m.request_finished({"length", 100, 3, 57, 0.1, 0.05, 0.5, 0.06, 0.04});
  // No token: no TTFT and no prefill time observed, but its wait in the queue is.
  m.request_finished({"aborted", 7, 0, 0, 5, kNaN, 1000, 1000, 2});
  m.request_finished({"stop", 5, 2, 4, 0.01, 0.0075, 0.125});  // no queue or prefill time given
  m.set_scheduler_state({.running = 3, .waiting = 5, .kv_blocks_total = 200, .kv_blocks_free = 50});
  m.set_stored_responses(7, 123456);
  const std::string text = m.render();
  EXPECT_EQ(block(text, "kvserve_requests_total"),
            "# HELP kvserve_requests_total Requests finished, by finish reason.\n"
            "# TYPE kvserve_requests_total counter\n"
            "kvserve_requests_total{finish_reason=\"length\"} 1\n"
            "kvserve_requests_total{finish_reason=\"stop\"} 2\n"
            "kvserve_requests_total{finish_reason=\"aborted\"} 1\n");
  // Values 0.25, 0.5, 1000, 0.125; le is inclusive, so 0.25 counts in le="0.25".
  std::string e2e =
      "# HELP kvserve_e2e_request_latency_seconds Time from arrival to finish.\n"
      "# TYPE kvserve_e2e_request_latency_seconds histogram\n";
  for (const char* le : {"0.01", "0.025", "0.05", "0.1"}) {
    e2e += "kvserve_e2e_request_latency_seconds_bucket{le=\"" + std::string(le) + "\"} 0\n";
  }
  e2e += "kvserve_e2e_request_latency_seconds_bucket{le=\"0.25\"} 2\n";
  for (const char* le :
       {"0.5", "1", "2.5", "5", "10", "15", "20", "30", "45", "60", "90", "120", "180", "300", "600"}) {
    e2e += "kvserve_e2e_request_latency_seconds_bucket{le=\"" + std::string(le) + "\"} 3\n";
  }
  e2e +=
      "kvserve_e2e_request_latency_seconds_bucket{le=\"+Inf\"} 4\n"
      "kvserve_e2e_request_latency_seconds_sum 1000.875\n"
      "kvserve_e2e_request_latency_seconds_count 4\n";
  EXPECT_EQ(block(text, "kvserve_e2e_request_latency_seconds"), e2e);
  // Generated tokens 1, 3, 0, 2 in power-of-two buckets.
  std::string generated =
      "# HELP kvserve_request_generation_tokens Generated tokens per finished request.\n"
      "# TYPE kvserve_request_generation_tokens histogram\n"
      "kvserve_request_generation_tokens_bucket{le=\"1\"} 2\n"
      "kvserve_request_generation_tokens_bucket{le=\"2\"} 3\n";
  for (int le = 4; le <= 131072; le *= 2) {
    generated += "kvserve_request_generation_tokens_bucket{le=\"" + std::to_string(le) + "\"} 4\n";
  }
  generated +=
      "kvserve_request_generation_tokens_bucket{le=\"+Inf\"} 4\n"
      "kvserve_request_generation_tokens_sum 6\n"
      "kvserve_request_generation_tokens_count 4\n";
  EXPECT_EQ(block(text, "kvserve_request_generation_tokens"), generated);
  for (const char* line :
       {"\nkvserve_prompt_tokens_total 122\n", "\nkvserve_generation_tokens_total 6\n",
        "\nkvserve_cached_prompt_tokens_total 61\n", "\nkvserve_prefix_cache_hit_ratio 0.5\n",
        "\nkvserve_requests_running 3\n", "\nkvserve_requests_waiting 5\n",
        "\nkvserve_kv_blocks_capacity 200\n", "\nkvserve_kv_blocks_free 50\n",
        "\nkvserve_kv_blocks_cached 0\n", "\nkvserve_kv_cache_usage_ratio 0.75\n",
        "\nkvserve_responses_stored 7\n", "\nkvserve_responses_stored_bytes 123456\n"}) {
    EXPECT_NE(text.find(line), std::string::npos) << line;
  }
  const Exposition e = parse(text);
  ASSERT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors);
  EXPECT_EQ(e.value("kvserve_time_to_first_token_seconds_count"), 3);
  EXPECT_EQ(e.value("kvserve_time_to_first_token_seconds_bucket", {{"le", "0.01"}}), 1);
  EXPECT_EQ(e.value("kvserve_time_to_first_token_seconds_bucket", {{"le", "0.08"}}), 2);
  EXPECT_EQ(e.value("kvserve_time_to_first_token_seconds_bucket", {{"le", "0.1"}}), 3);
  EXPECT_DOUBLE_EQ(e.value("kvserve_time_to_first_token_seconds_sum"), 0.13);
  EXPECT_EQ(e.value("kvserve_request_queue_time_seconds_count"), 3);
  EXPECT_EQ(e.value("kvserve_request_queue_time_seconds_bucket", {{"le", "0.005"}}), 1);
  EXPECT_EQ(e.value("kvserve_request_queue_time_seconds_bucket", {{"le", "0.06"}}), 2);
  EXPECT_EQ(e.value("kvserve_request_queue_time_seconds_bucket", {{"le", "60"}}), 2);
  EXPECT_EQ(e.value("kvserve_request_queue_time_seconds_bucket", {{"le", "+Inf"}}), 3);
  EXPECT_DOUBLE_EQ(e.value("kvserve_request_queue_time_seconds_sum"), 1000.065);
  EXPECT_EQ(e.value("kvserve_request_prefill_time_seconds_count"), 2);
  EXPECT_EQ(e.value("kvserve_request_prefill_time_seconds_bucket", {{"le", "0.01"}}), 0);
  EXPECT_EQ(e.value("kvserve_request_prefill_time_seconds_bucket", {{"le", "0.02"}}), 1);
  EXPECT_EQ(e.value("kvserve_request_prefill_time_seconds_bucket", {{"le", "0.04"}}), 2);
  EXPECT_DOUBLE_EQ(e.value("kvserve_request_prefill_time_seconds_sum"), 0.055);
  EXPECT_EQ(e.value("kvserve_time_per_output_token_seconds_count"), 2);
  EXPECT_DOUBLE_EQ(e.value("kvserve_time_per_output_token_seconds_sum"), 0.0575);
  EXPECT_EQ(e.value("kvserve_request_prompt_tokens_bucket", {{"le", "8"}}), 2);  // 7 and 5
  EXPECT_EQ(e.value("kvserve_request_prompt_tokens_bucket", {{"le", "64"}}), 3);
  EXPECT_EQ(e.value("kvserve_request_prompt_tokens_sum"), 122);
}

// Requests that ran with a LoRA adapter are counted by its name too (the served ones from the
// start, at 0); a request of the base model is not.
TEST(Metrics, LoraAdaptersCountTheirRequestsAndTokens) {
  Metrics m;
  const std::vector<std::string> adapters = {"sql", "chat"};
  m.set_lora_adapters(adapters);
  Exposition e = parse(m.render());
  ASSERT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors);
  for (const char* family : {"kvserve_lora_requests_total", "kvserve_lora_prompt_tokens_total",
                             "kvserve_lora_generation_tokens_total"})
    for (const std::string& adapter : adapters)
      EXPECT_EQ(e.value(family, {{"adapter", adapter}}), 0) << family << " " << adapter;
  m.request_finished(
      {.finish_reason = "stop", .prompt_tokens = 10, .generation_tokens = 3, .lora_adapter = "sql"});
  m.request_finished(
      {.finish_reason = "length", .prompt_tokens = 5, .generation_tokens = 2, .lora_adapter = "sql"});
  m.request_finished(
      {.finish_reason = "stop", .prompt_tokens = 7, .generation_tokens = 4});  // the base model
  e = parse(m.render());
  ASSERT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors);
  EXPECT_EQ(e.value("kvserve_lora_requests_total", {{"adapter", "sql"}}), 2);
  EXPECT_EQ(e.value("kvserve_lora_prompt_tokens_total", {{"adapter", "sql"}}), 15);
  EXPECT_EQ(e.value("kvserve_lora_generation_tokens_total", {{"adapter", "sql"}}), 5);
  EXPECT_EQ(e.value("kvserve_lora_requests_total", {{"adapter", "chat"}}), 0);
  EXPECT_EQ(e.value("kvserve_requests_total", {{"finish_reason", "stop"}}), 2);  // all requests, as before
  EXPECT_EQ(e.value("kvserve_generation_tokens_total"), 9);
}

TEST(Metrics, BucketsAreCumulativeWithExactCountAndSum) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> log10_seconds(-5, 2);
  const std::vector<double> bounds_hit = {0.0001, 0.001, 0.01, 0.1, 1, 10};  // exact bounds, inclusive
  Metrics m;
  std::vector<double> values;
  double sum = 0;
  for (int i = 0; i < 2000; ++i) {
    const double v = i % 10 == 0 ? bounds_hit[static_cast<std::size_t>(i / 10) % bounds_hit.size()]
                                 : std::pow(10.0, log10_seconds(rng));
    values.push_back(v);
    sum += v;
    m.engine_step(v);
  }
  const Exposition e = parse(m.render());
  ASSERT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors);
  expect_valid_histogram(e, "kvserve_engine_step_seconds");
  for (const Sample& s : e.families.at("kvserve_engine_step_seconds").samples) {
    if (!s.labels.contains("le")) continue;
    const double le = *parse_value(s.labels.at("le"));
    const auto expected = std::count_if(values.begin(), values.end(), [&](double v) { return v <= le; });
    EXPECT_EQ(s.value, static_cast<double>(expected)) << "le=" << s.labels.at("le");
  }
  EXPECT_EQ(e.value("kvserve_engine_step_seconds_count"), 2000);
  EXPECT_EQ(e.value("kvserve_engine_steps_total"), 2000);
  EXPECT_NEAR(e.value("kvserve_engine_step_seconds_sum"), sum, sum * 1e-12);
  EXPECT_EQ(e.value("kvserve_engine_device_seconds_total"), 0);  // no device time reported
}

TEST(Metrics, DeviceSecondsAddUp) {
  Metrics m;
  m.engine_step(0.010, 0.009);
  m.engine_step(0.020, 0.015);
  m.engine_step(0.005, kNaN);  // ignored, as are negative times
  m.engine_step(0.005, -1);
  const Exposition e = parse(m.render());
  ASSERT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors);
  EXPECT_NEAR(e.value("kvserve_engine_device_seconds_total"), 0.024, 1e-12);
  EXPECT_EQ(e.value("kvserve_engine_steps_total"), 4);
}

TEST(Metrics, GapSecondsAddUpAndIgnoreBadValues) {
  Metrics m;
  m.engine_gap(0.001);
  m.engine_gap(0.0025);
  m.engine_gap(kNaN);
  m.engine_gap(-1);
  m.engine_gap(std::numeric_limits<double>::infinity());
  const Exposition e = parse(m.render());
  ASSERT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors);
  EXPECT_NEAR(e.value("kvserve_engine_gap_seconds_total"), 0.0035, 1e-12);
  EXPECT_EQ(e.value("kvserve_engine_steps_total"), 0);  // a gap is not a step
}

TEST(Metrics, EscapesLabelValuesAndBoundsTheirNumber) {
  Metrics m;
  m.request_rejected("bad\"code\\x\ny");
  m.request_rejected("");
  const std::string text = m.render();
  EXPECT_NE(text.find("\nkvserve_requests_rejected_total{code=\"bad\\\"code\\\\x\\ny\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("\nkvserve_requests_rejected_total{code=\"unknown\"} 1\n"), std::string::npos);
  Exposition e = parse(text);
  ASSERT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors);
  EXPECT_EQ(e.value("kvserve_requests_rejected_total", {{"code", "bad\"code\\x\ny"}}), 1);

  for (int i = 0; i < 40; ++i)
    m.request_rejected("CODE_" + std::to_string(i));
  e = parse(m.render());
  ASSERT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors);
  const auto& samples = e.families.at("kvserve_requests_rejected_total").samples;
  EXPECT_EQ(samples.size(), Metrics::kMaxLabelValues + 1);
  double total = 0;
  for (const Sample& s : samples)
    total += s.value;
  EXPECT_EQ(total, 42);
  // 3 known codes and 2 above leave 11 places: CODE_0..CODE_10; the other 29 are "other".
  EXPECT_EQ(e.value("kvserve_requests_rejected_total", {{"code", "CODE_10"}}), 1);
  EXPECT_EQ(e.value("kvserve_requests_rejected_total", {{"code", "other"}}), 29);
}

TEST(Metrics, BadInputsDoNotCorruptTheOutput) {
  Metrics m;
  m.request_finished({"stop", -5, -1, -3, -1, kNaN, kInf, -kInf, -2});
  m.request_finished({"length", 10, 2, 50, -0.5, kNaN, -kInf, kNaN, kInf});
  m.engine_step(kNaN);
  m.engine_step(-1);
  m.set_scheduler_state(
      {.running = -1, .waiting = -2, .kv_blocks_total = 10, .kv_blocks_free = 20, .kv_blocks_cached = 30});
  const std::string text = m.render();
  const Exposition e = parse(text);
  ASSERT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors);
  for (const auto& [name, family] : e.families) {
    for (const Sample& s : family.samples)
      EXPECT_TRUE(std::isfinite(s.value) && s.value >= 0) << s.name;
  }
  for (const std::string& h : kHistograms)
    expect_valid_histogram(e, h);
  EXPECT_EQ(e.value("kvserve_prompt_tokens_total"), 10);
  EXPECT_EQ(e.value("kvserve_cached_prompt_tokens_total"), 10);  // capped at the prompt
  EXPECT_EQ(e.value("kvserve_prefix_cache_hit_ratio"), 1);
  EXPECT_EQ(e.value("kvserve_time_to_first_token_seconds_bucket", {{"le", "0.001"}}), 1);  // -0.5 -> 0
  EXPECT_EQ(e.value("kvserve_time_per_output_token_seconds_count"), 0);
  EXPECT_EQ(e.value("kvserve_request_queue_time_seconds_count"), 0);
  EXPECT_EQ(e.value("kvserve_request_prefill_time_seconds_count"), 0);
  EXPECT_EQ(e.value("kvserve_e2e_request_latency_seconds_count"), 0);
  EXPECT_EQ(e.value("kvserve_engine_steps_total"), 2);
  EXPECT_EQ(e.value("kvserve_engine_step_seconds_count"), 1);
  EXPECT_EQ(e.value("kvserve_kv_blocks_free"), 10);
  EXPECT_EQ(e.value("kvserve_kv_cache_usage_ratio"), 0);
  m.set_scheduler_state({.kv_blocks_total = -4, .kv_blocks_free = 3});
  EXPECT_EQ(parse(m.render()).value("kvserve_kv_cache_usage_ratio"), 0);
  // More accepted draft tokens than drafted cannot be: capped.
  m.set_scheduler_state({.draft_tokens = 10, .accepted_draft_tokens = 12});
  EXPECT_EQ(parse(m.render()).value("kvserve_spec_decode_draft_tokens_total"), 10);
  EXPECT_EQ(parse(m.render()).value("kvserve_spec_decode_accepted_tokens_total"), 10);
}

TEST(Metrics, ParserRejectsMalformedExpositions) {
  const std::string head = "# HELP a_total A.\n# TYPE a_total counter\n";
  EXPECT_TRUE(parse(head + "a_total{x=\"1\"} 2\n").errors.empty());
  for (const std::string& bad : std::vector<std::string>{
           "a_total 1\n", head + "a_total{x=\"a\"b\"} 1\n", head + "a_total inf\n", head + "a_total 1 2 3\n",
           head + "b_total 1\n", head + head, head + "a_total{x=\"\\q\"} 1\n", head + "a_total{x=1} 1\n",
           "# HELP h H.\n# TYPE h histogram\nh_bucket 1\n", head + "# TYPE b gauge\n",
           head + "a_total{x=\"1\"y=\"2\"} 1\n"}) {
    EXPECT_FALSE(parse(bad).errors.empty()) << bad;
  }
}

// Writers on several threads while the main thread renders: every render parses and is one consistent
// snapshot, and the totals are exact at the end.
TEST(Metrics, ConcurrentObserversAndRenders) {
  Metrics m;
  constexpr int kThreads = 3, kPerThread = 50000;
  std::atomic<int> running{kThreads};
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&m, &running, t] {
      for (int i = 0; i < kPerThread; ++i) {
        m.request_finished({i % 2 ? "stop" : "length", 3, 2, 1, 0.01, 0.02, 0.03});
        m.engine_step(0.004);
        m.set_scheduler_state(
            {.running = t, .waiting = i, .kv_blocks_total = 100, .kv_blocks_free = i % 100});
        if (i % 4 == 0) m.request_rejected("RESOURCE_EXHAUSTED");
      }
      --running;
    });
  }
  int renders = 0;
  while (running > 0 || renders == 0) {
    const Exposition e = parse(m.render());
    ++renders;
    ASSERT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors);
    for (const std::string& h : kHistograms)
      expect_valid_histogram(e, h);
    const double finished = e.value("kvserve_requests_total", {{"finish_reason", "stop"}}) +
                            e.value("kvserve_requests_total", {{"finish_reason", "length"}});
    EXPECT_EQ(e.value("kvserve_e2e_request_latency_seconds_count"), finished);
    EXPECT_EQ(e.value("kvserve_request_prompt_tokens_sum"), e.value("kvserve_prompt_tokens_total"));
    EXPECT_EQ(e.value("kvserve_prompt_tokens_total"), 3 * finished);
    EXPECT_EQ(e.value("kvserve_engine_step_seconds_count"), e.value("kvserve_engine_steps_total"));
  }
  for (std::thread& w : writers)
    w.join();
  const Exposition e = parse(m.render());
  constexpr double kTotal = kThreads * kPerThread;
  EXPECT_EQ(e.value("kvserve_requests_total", {{"finish_reason", "stop"}}), kTotal / 2);
  EXPECT_EQ(e.value("kvserve_requests_total", {{"finish_reason", "length"}}), kTotal / 2);
  EXPECT_EQ(e.value("kvserve_requests_rejected_total", {{"code", "RESOURCE_EXHAUSTED"}}), kTotal / 4);
  EXPECT_EQ(e.value("kvserve_generation_tokens_total"), 2 * kTotal);
  EXPECT_EQ(e.value("kvserve_time_per_output_token_seconds_count"), kTotal);
  EXPECT_EQ(e.value("kvserve_engine_steps_total"), kTotal);
  EXPECT_NEAR(e.value("kvserve_prefix_cache_hit_ratio"), 1.0 / 3, 1e-15);
  RecordProperty("renders", renders);
}

}  // namespace
}  // namespace kvserve
