// Writes the seed corpora of the fuzz targets: small valid inputs of every kind each target
// understands, plus a few near-misses, so that fuzzing starts from the interesting parts of each
// format instead of rediscovering them. Deterministic; run by hand when a format changes:
//
//   build/asan/tests/fuzz/fuzz_make_seeds tests/fuzz/corpus
//
// Files are written independently of the readers under test (safetensors and protobuf bytes by
// hand, JSON bodies as text), so a seed cannot inherit a reader's bug.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "kvserve/v1/kvserve.pb.h"

namespace {

namespace fs = std::filesystem;

fs::path g_root;

void write_seed(const std::string& target, const std::string& name, const std::string& bytes) {
  const fs::path dir = g_root / target;
  fs::create_directories(dir);
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::cerr << "cannot write " << (dir / name) << "\n";
    std::exit(1);
  }
}

// ---- fuzz_model_files: [u16 config length][config.json][model.safetensors] ----

struct TensorSpec {
  std::string name;
  std::string dtype;  // safetensors spelling
  std::vector<int64_t> shape;
};

size_t dtype_size(const std::string& dtype) {
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I64" || dtype == "U64" || dtype == "F64") return 8;
  return 1;
}

// Tensors in the given order, packed back to back; the header padded with spaces to 8 bytes, as
// the reference writer does. Values are a fixed byte pattern: the loader only converts them.
std::string safetensors(const std::vector<TensorSpec>& tensors, const std::string& metadata = "") {
  std::string header = "{";
  if (!metadata.empty()) header += "\"__metadata__\":" + metadata;
  uint64_t offset = 0;
  for (const TensorSpec& t : tensors) {
    uint64_t bytes = dtype_size(t.dtype);
    std::string shape;
    for (int64_t d : t.shape) {
      bytes *= static_cast<uint64_t>(d);
      shape += (shape.empty() ? "" : ",") + std::to_string(d);
    }
    if (header.size() > 1) header += ",";
    header += "\"" + t.name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":[" + shape +
              "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + bytes) + "]}";
    offset += bytes;
  }
  header += "}";
  while (header.size() % 8)
    header += ' ';
  std::string out;
  for (int i = 0; i < 8; ++i)
    out += static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  out += header;
  for (uint64_t i = 0; i < offset; ++i)
    out += static_cast<char>((i * 37 + 11) % 61);  // small finite values in every float format
  return out;
}

std::string model_input(const std::string& config, const std::string& weights) {
  std::string out;
  out += static_cast<char>(config.size() & 0xFF);
  out += static_cast<char>(config.size() >> 8);
  return out + config + weights;
}

struct Shape {
  int vocab = 16, hidden = 8, inter = 16, layers = 1, heads = 2, kv_heads = 2, head_dim = 4;
  bool tied = true, bias = false, head_norms = false;
  bool fused = false;     // Phi-3: qkv_proj and gate_up_proj instead of the separate projections
  bool sandwich = false;  // Gemma 2/3: pre_ and post_feedforward_layernorm too
  std::string dtype = "F16";
};

std::vector<TensorSpec> model_tensors(const Shape& s) {
  const int64_t q = int64_t{s.heads} * s.head_dim, kv = int64_t{s.kv_heads} * s.head_dim;
  std::vector<TensorSpec> t;
  t.push_back({"model.embed_tokens.weight", s.dtype, {s.vocab, s.hidden}});
  for (int i = 0; i < s.layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    t.push_back({p + "input_layernorm.weight", s.dtype, {s.hidden}});
    t.push_back({p + "mlp.down_proj.weight", s.dtype, {s.hidden, s.inter}});
    if (s.fused) {
      t.push_back({p + "mlp.gate_up_proj.weight", s.dtype, {2 * s.inter, s.hidden}});
    } else {
      t.push_back({p + "mlp.gate_proj.weight", s.dtype, {s.inter, s.hidden}});
      t.push_back({p + "mlp.up_proj.weight", s.dtype, {s.inter, s.hidden}});
    }
    t.push_back({p + "post_attention_layernorm.weight", s.dtype, {s.hidden}});
    if (s.sandwich) {
      t.push_back({p + "post_feedforward_layernorm.weight", s.dtype, {s.hidden}});
      t.push_back({p + "pre_feedforward_layernorm.weight", s.dtype, {s.hidden}});
    }
    if (!s.fused) t.push_back({p + "self_attn.k_proj.weight", s.dtype, {kv, s.hidden}});
    t.push_back({p + "self_attn.o_proj.weight", s.dtype, {s.hidden, q}});
    if (s.fused) {
      t.push_back({p + "self_attn.qkv_proj.weight", s.dtype, {q + 2 * kv, s.hidden}});
    } else {
      t.push_back({p + "self_attn.q_proj.weight", s.dtype, {q, s.hidden}});
      t.push_back({p + "self_attn.v_proj.weight", s.dtype, {kv, s.hidden}});
    }
    if (s.bias) {
      t.push_back({p + "self_attn.k_proj.bias", s.dtype, {kv}});
      t.push_back({p + "self_attn.q_proj.bias", s.dtype, {q}});
      t.push_back({p + "self_attn.v_proj.bias", s.dtype, {kv}});
    }
    if (s.head_norms) {
      t.push_back({p + "self_attn.k_norm.weight", s.dtype, {s.head_dim}});
      t.push_back({p + "self_attn.q_norm.weight", s.dtype, {s.head_dim}});
    }
  }
  t.push_back({"model.norm.weight", s.dtype, {s.hidden}});
  if (!s.tied) t.push_back({"lm_head.weight", s.dtype, {s.vocab, s.hidden}});
  return t;
}

void model_file_seeds() {
  const std::string target = "fuzz_model_files";
  {
    const Shape s;
    write_seed(
        target, "llama_f16_tied",
        model_input(R"({"architectures":["LlamaForCausalLM"],"vocab_size":16,"hidden_size":8,)"
                    R"("intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,)"
                    R"("num_key_value_heads":2,"rms_norm_eps":1e-06,"rope_theta":10000.0,)"
                    R"("rope_scaling":null,"max_position_embeddings":64,"tie_word_embeddings":true,)"
                    R"("bos_token_id":1,"eos_token_id":2,"hidden_act":"silu","torch_dtype":"float16"})",
                    safetensors(model_tensors(s), R"({"format":"pt"})")));
  }
  {
    Shape s;
    s.kv_heads = 1;
    s.tied = false;
    s.bias = true;
    s.dtype = "BF16";
    write_seed(target, "qwen2_bf16_gqa_bias",
               model_input(R"({"architectures":["Qwen2ForCausalLM"],"vocab_size":16,"hidden_size":8,)"
                           R"("intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,)"
                           R"("num_key_value_heads":1,"use_sliding_window":false,"eos_token_id":[2,3],)"
                           R"("dtype":"bfloat16","torch_dtype":"bfloat16"})",
                           safetensors(model_tensors(s))));
  }
  {
    Shape s;
    s.layers = 2;
    s.dtype = "F32";
    s.head_dim = 6;
    s.tied = false;
    std::vector<TensorSpec> t = model_tensors(s);
    t.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", "F32", {3}});  // ignored by the loader
    write_seed(target, "mistral_f32_window_rope_parameters",
               model_input(R"({"architectures":["MistralForCausalLM"],"vocab_size":16,"hidden_size":8,)"
                           R"("intermediate_size":16,"num_hidden_layers":2,"num_attention_heads":2,)"
                           R"("head_dim":6,"sliding_window":32,"max_position_embeddings":128,)"
                           R"("rope_parameters":{"rope_theta":500000.0,"rope_type":"llama3","factor":8.0,)"
                           R"("low_freq_factor":1.0,"high_freq_factor":4.0,)"
                           R"("original_max_position_embeddings":16}})",
                           safetensors(t)));
  }
  {
    Shape s;
    s.tied = true;
    std::vector<TensorSpec> t = model_tensors(s);
    t.push_back({"lm_head.weight", "F16", {16, 8}});  // a tied copy some exporters keep
    write_seed(
        target, "llama3_rope_scaling_tied_copy",
        model_input(R"({"architectures":["LlamaForCausalLM"],"vocab_size":16,"hidden_size":8,)"
                    R"("intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,)"
                    R"("tie_word_embeddings":true,"rope_scaling":{"rope_type":"llama3","factor":8.0,)"
                    R"("low_freq_factor":1.0,"high_freq_factor":4.0,)"
                    R"("original_max_position_embeddings":8192},"attention_bias":false,"dtype":"float16"})",
                    safetensors(t)));
  }
  {
    Shape s;
    s.kv_heads = 1;
    s.head_dim = 8;  // heads x head_dim = 16, twice hidden, as Qwen3 models have it
    s.head_norms = true;
    s.dtype = "BF16";
    write_seed(target, "qwen3_bf16_head_norms_tied",
               model_input(R"({"architectures":["Qwen3ForCausalLM"],"vocab_size":16,"hidden_size":8,)"
                           R"("intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,)"
                           R"("num_key_value_heads":1,"head_dim":8,"attention_bias":false,)"
                           R"("use_sliding_window":false,"sliding_window":null,"max_window_layers":28,)"
                           R"("layer_types":["full_attention"],"tie_word_embeddings":true,)"
                           R"("rope_theta":1000000,"dtype":"bfloat16"})",
                           safetensors(model_tensors(s))));
  }
  {
    Shape s;
    s.kv_heads = 1;
    s.fused = true;
    s.tied = false;
    s.dtype = "BF16";
    write_seed(target, "phi3_bf16_fused_projections_window",
               model_input(R"({"architectures":["Phi3ForCausalLM"],"vocab_size":16,"hidden_size":8,)"
                           R"("intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,)"
                           R"("num_key_value_heads":1,"sliding_window":31,"max_position_embeddings":64,)"
                           R"("original_max_position_embeddings":64,"rope_scaling":null,)"
                           R"("tie_word_embeddings":false,"torch_dtype":"bfloat16"})",
                           safetensors(model_tensors(s))));
  }
  {
    Shape s;
    s.kv_heads = 1;
    s.tied = false;
    write_seed(
        target, "granite_f16_multipliers",
        model_input(R"({"architectures":["GraniteForCausalLM"],"vocab_size":16,"hidden_size":8,)"
                    R"("intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,)"
                    R"("num_key_value_heads":1,"embedding_multiplier":12.0,"attention_multiplier":0.0078125,)"
                    R"("residual_multiplier":0.22,"logits_scaling":16.0,"attention_bias":false,)"
                    R"("mlp_bias":false,"tie_word_embeddings":false,"torch_dtype":"float16"})",
                    safetensors(model_tensors(s))));
  }
  {
    Shape s;
    s.layers = 2;
    s.kv_heads = 1;
    s.sandwich = true;
    s.tied = false;
    write_seed(target, "gemma2_f16_softcaps_alternating_window",
               model_input(R"({"architectures":["Gemma2ForCausalLM"],"vocab_size":16,"hidden_size":8,)"
                           R"("intermediate_size":16,"num_hidden_layers":2,"num_attention_heads":2,)"
                           R"("num_key_value_heads":1,"head_dim":4,"query_pre_attn_scalar":20,)"
                           R"("sliding_window":5,"attn_logit_softcapping":50.0,)"
                           R"("final_logit_softcapping":null,"hidden_activation":"gelu_pytorch_tanh",)"
                           R"("tie_word_embeddings":false,"torch_dtype":"float16"})",
                           safetensors(model_tensors(s))));
  }
  {
    Shape s;
    s.layers = 2;
    s.kv_heads = 1;
    s.head_dim = 8;
    s.head_norms = true;
    s.sandwich = true;
    s.dtype = "BF16";
    write_seed(
        target, "gemma3_bf16_two_ropes_layer_types",
        model_input(R"({"architectures":["Gemma3ForCausalLM"],"vocab_size":16,"hidden_size":8,)"
                    R"("intermediate_size":16,"num_hidden_layers":2,"num_attention_heads":2,)"
                    R"("num_key_value_heads":1,"head_dim":8,"query_pre_attn_scalar":8,)"
                    R"("sliding_window":4,"sliding_window_pattern":2,)"
                    R"("layer_types":["sliding_attention","full_attention"],"rope_theta":1000000.0,)"
                    R"("rope_local_base_freq":10000.0,"rope_scaling":{"rope_type":"linear","factor":8.0},)"
                    R"("torch_dtype":"bfloat16"})",
                    safetensors(model_tensors(s))));
  }
  // The reader alone: every dtype family, a zero-size tensor, metadata with a non-string value.
  write_seed(target, "reader_only_mixed_dtypes",
             model_input("", safetensors({{"a", "U8", {3, 5}},
                                          {"b", "I64", {2}},
                                          {"c", "BF16", {0, 7}},
                                          {"d", "F8_E4M3", {4}},
                                          {"e", "F32", {}},
                                          {"f", "BOOL", {1, 1, 1}}},
                                         R"({"format":"pt","n":3})")));
  write_seed(target, "reader_only_empty_header", model_input("{}", std::string("\x02\0\0\0\0\0\0\0{}", 10)));
}

// ---- fuzz_request_validation: serialized kvserve.v1.GenerateRequest ----

void request_seeds() {
  const std::string target = "fuzz_request_validation";
  const auto save = [&](const std::string& name, const kvserve::v1::GenerateRequest& r) {
    write_seed(target, name, r.SerializeAsString());
  };
  {
    kvserve::v1::GenerateRequest r;
    r.set_request_id("text-1");
    r.set_text("Hello world, caf\xC3\xA9");
    save("valid_text", r);
  }
  {
    kvserve::v1::GenerateRequest r;
    r.set_request_id("ids-1");
    for (uint32_t id : {1u, 67u, 114u, 511u})
      r.mutable_token_ids()->add_ids(id);
    r.mutable_sampling()->set_temperature(0.7f);
    r.mutable_sampling()->set_top_k(40);
    r.mutable_sampling()->set_top_p(0.9f);
    r.mutable_sampling()->set_min_p(0.05f);
    r.mutable_sampling()->set_repetition_penalty(1.1f);
    r.mutable_sampling()->set_presence_penalty(0.5f);
    r.mutable_sampling()->set_frequency_penalty(-0.5f);
    r.mutable_sampling()->set_seed(42);
    (*r.mutable_sampling()->mutable_logit_bias())[67] = -100.0f;
    (*r.mutable_sampling()->mutable_logit_bias())[300] = 2.5f;
    r.mutable_stop()->set_max_tokens(16);
    r.mutable_stop()->set_min_tokens(2);
    r.mutable_stop()->add_stop("\n\n");
    r.mutable_stop()->add_stop("END");
    r.mutable_stop()->add_stop_token_ids(2);
    r.mutable_stop()->set_ignore_eos(true);
    r.mutable_stop()->set_include_stop_str_in_output(true);
    r.set_top_logprobs(5);
    r.set_prompt_logprobs(3);
    save("valid_ids_all_fields", r);
  }
  {
    kvserve::v1::GenerateRequest r;
    r.set_text(" no bos");
    r.set_no_bos(true);
    r.mutable_stop()->add_stop("");
    r.mutable_stop()->set_max_tokens(1000);  // fits max_model_len, not the fuzz engine's pool
    save("valid_no_bos_empty_stop", r);
  }
  {
    kvserve::v1::GenerateRequest r;
    r.mutable_token_ids()->add_ids(512);
    save("invalid_id_outside_vocab", r);
  }
  {
    kvserve::v1::GenerateRequest r;
    r.set_text("x");
    r.mutable_sampling()->set_temperature(std::numeric_limits<float>::quiet_NaN());
    save("invalid_nan_temperature", r);
  }
  {
    kvserve::v1::GenerateRequest r;
    r.set_text("x");
    r.mutable_stop()->set_max_tokens(4);
    r.mutable_stop()->set_min_tokens(5);
    save("invalid_min_over_max", r);
  }
  {
    kvserve::v1::GenerateRequest r;
    r.mutable_token_ids()->add_ids(1);
    r.mutable_stop()->set_max_tokens(0x80000000u);
    save("invalid_max_tokens_31_bits", r);
  }
  save("invalid_no_input", kvserve::v1::GenerateRequest());
  {
    kvserve::v1::GenerateRequest r;
    r.set_text("choices");
    r.set_n(8);
    r.mutable_sampling()->set_temperature(1.0f);
    r.mutable_sampling()->set_seed(0xFFFFFFFFFFFFFFFEull);  // choice i's seed + i wraps
    save("valid_choices", r);
    r.set_n(129);
    save("invalid_too_many_choices", r);
  }
  const auto add_message = [](kvserve::v1::GenerateRequest& r, const char* role, const char* content) {
    kvserve::v1::ChatMessage* m = r.mutable_chat()->add_messages();
    m->set_role(role);
    m->set_content(content);
  };
  {
    kvserve::v1::GenerateRequest r;
    add_message(r, "system", "Be brief.");
    add_message(r, "user", "Hello <s> caf\xC3\xA9");
    add_message(r, "assistant", " Hi. ");
    add_message(r, "user", "[INST] again </s>");
    r.mutable_chat()->set_add_generation_prompt(false);
    save("valid_chat", r);
    add_message(r, "assistant", "Sure, ");
    r.mutable_chat()->clear_add_generation_prompt();
    r.mutable_chat()->set_continue_final_message(true);
    save("valid_chat_continue_final_message", r);
  }
  {
    kvserve::v1::GenerateRequest r;
    add_message(r, "user", "one");
    add_message(r, "user", "two");
    save("invalid_chat_roles_do_not_alternate", r);
  }
  {
    kvserve::v1::GenerateRequest r;
    add_message(r, "user", "Weather in Z\xC3\xBCrich?");
    add_message(r, "assistant", "");
    r.mutable_chat()->mutable_messages(1)->set_extra_json(
        R"({"content": null, "tool_calls": [{"type": "function", "function": {"name": "get_weather", )"
        R"("arguments": {"city": "Z\u00fcrich", "days": 2}}}]})");
    add_message(r, "tool", "Sunny, 24 C");
    r.mutable_chat()->mutable_messages(2)->set_extra_json(R"({"name": "get_weather"})");
    r.mutable_chat()->set_tools_json(
        R"([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", )"
        R"("properties": {"city": {"type": "string"}, "days": {"type": "integer", "default": 1}}}}}])");
    r.mutable_chat()->set_template_kwargs_json(R"({"enable_thinking": false, "date_string": "4 Jul 2026"})");
    save("valid_chat_tools_and_fields", r);
  }
}

// ---- fuzz_openai_request: [bit 0: completions / chat; (byte >> 1) % 3: the served tool-call
//      format, none / hermes / llama3_json][JSON body] ----

void openai_request_seeds() {
  const std::string target = "fuzz_openai_request";
  const auto completions = [&](const std::string& name, const std::string& body) {
    write_seed(target, "completions_" + name, std::string(1, '\0') + body);
  };
  const auto chat = [&](const std::string& name, const std::string& body, char format = 0) {
    write_seed(target, "chat_" + name, std::string(1, static_cast<char>(1 | format << 1)) + body);
  };
  constexpr char kHermes = 1, kLlama3Json = 2;
  // Read as every endpoint's body (and as /v1/responses'), whatever byte 0 says.
  const auto responses = [&](const std::string& name, const std::string& body, char format = 0) {
    write_seed(target, "responses_" + name, std::string(1, static_cast<char>(1 | format << 1)) + body);
  };
  completions("minimal", R"({"model": "tiny", "prompt": "Hello world"})");
  completions("stream_usage_logprobs",
              R"({"model": "tiny", "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0.7, )"
              R"("top_p": 0.9, "stream": true, "stream_options": {"include_usage": true}, "logprobs": 3, )"
              R"("echo": false, "seed": -1, "user": "someone"})");
  completions("token_ids_n_stop_bias",
              R"({"prompt": [[1, 450, 45, 511]], "n": 3, "best_of": 3, "stop": ["\n\n", "END"], )"
              R"("stop_token_ids": [2], "min_tokens": 1, "max_tokens": 8, "ignore_eos": false, )"
              R"("add_special_tokens": false, "logit_bias": {"67": -100, "300": 2.5}, "top_k": -1, )"
              R"("min_p": 0.05, "repetition_penalty": 1.1, "presence_penalty": 0.5, )"
              R"("frequency_penalty": -0.5, "seed": 18446744073709551615})");
  completions("regex", R"({"prompt": "Date: ", "max_tokens": 12, "temperature": 0, )"
                       R"("response_format": {"type": "regex", "regex": "[0-9]{4}-[0-9]{2}-[0-9]{2}"}})");
  completions("choice_stream", R"({"prompt": "Sentiment:", "stream": true, "logprobs": 0, )"
                               R"("response_format": {"type": "choice", "choice": ["positive", "negative", )"
                               R"("caf\u00e9 \ud83d\ude00"]}})");
  responses(
      "items_tools_stream",
      R"({"model": "tiny", "instructions": "Be brief.", "input": [{"role": "developer", "content": )"
      R"("Use tools."}, {"role": "user", "content": [{"type": "input_text", "text": "Weather in Oslo?"}]}, )"
      R"({"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": )"
      R"("{\"city\": \"Oslo\"}"}, {"type": "function_call_output", "call_id": "call_1", "output": )"
      R"("Sunny"}], "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": )"
      R"("object", "properties": {"city": {"type": "string"}}}}], "max_output_tokens": 16, "stream": true})",
      kHermes);
  responses("named_function",
            R"({"input": "Weather?", "tools": [{"type": "function", "name": "f", )"
            R"("parameters": {"type": "object", "properties": {"c": {"type": "string"}}}}], )"
            R"("tool_choice": {"type": "function", "name": "f"}})");
  responses("text_format", R"({"input": "A person", "text": {"format": {"type": "json_schema", "name": "p", )"
                           R"("schema": {"type": "object", "properties": {"name": {"type": "string"}}}}}})");
  responses("previous_response", R"({"input": [{"type": "function_call_output", "call_id": "call_1", )"
                                 R"("output": "ok"}], "previous_response_id": "resp_1", "store": false})");
  responses("refused_previous_response", R"({"input": "x", "previous_response_id": "resp_2"})");
  // Read as /v1/messages' (and count_tokens') too: Anthropic's shapes.
  const auto messages = [&](const std::string& name, const std::string& body, char format = 0) {
    write_seed(target, "messages_" + name, std::string(1, static_cast<char>(1 | format << 1)) + body);
  };
  messages(
      "tool_use_round_trip",
      R"({"model": "tiny", "max_tokens": 32, "system": [{"type": "text", "text": "Be brief."}], )"
      R"("messages": [{"role": "user", "content": "Weather in Oslo?"}, {"role": "assistant", "content": )"
      R"([{"type": "thinking", "thinking": "hm", "signature": ""}, {"type": "text", "text": "Checking."}, )"
      R"({"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}]}, )"
      R"({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": )"
      R"([{"type": "text", "text": "Sunny"}]}, {"type": "text", "text": "And tomorrow?"}]}], "tools": )"
      R"([{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": )"
      R"("string"}}}}], "tool_choice": {"type": "auto"}, "stream": true, "stop_sequences": ["END"]})",
      kHermes);
  messages(
      "forced_tool_prefill_thinking",
      R"({"max_tokens": 8, "messages": [{"role": "user", "content": "x"}, {"role": "assistant", )"
      R"("content": "{"}], "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": )"
      R"({"type": "any", "disable_parallel_tool_use": true}, "thinking": {"type": "disabled"}})");
  messages("refused_kwargs_with_thinking",
           R"({"max_tokens": 8, "messages": [{"role": "user", "content": "x"}], )"
           R"("chat_template_kwargs": [], "thinking": {"type": "enabled"}})");
  messages("output_format", R"({"max_tokens": 8, "messages": [{"role": "user", "content": "A person"}], )"
                            R"("output_format": {"type": "json_schema", "schema": {"type": "object"}}})");
  completions("wrong_model", R"({"model": "gpt-4o-mini", "prompt": "x"})");
  completions("several_prompts", R"({"prompt": ["Once", [1, 450, 45], "upon"], "n": 2, "max_tokens": 4, )"
                                 R"("stream": true, "stream_options": {"include_usage": true}})");
  completions("refused_echo_suffix", R"({"prompt": "x", "echo": true, "suffix": "y"})");
  // lm-evaluation-harness's loglikelihood request, and vLLM's prompt_logprobs.
  completions("echo_logprobs", R"({"prompt": [[1, 450, 45, 511], [1, 67]], "echo": true, "logprobs": 1, )"
                               R"("max_tokens": 1, "temperature": 0, "prompt_logprobs": 2})");
  completions("echo_stream", R"({"prompt": "Hello", "echo": true, "stream": true, "n": 2})");
  completions("echo_prompt_only",
              R"({"prompt": [1, 450, 45], "echo": true, "max_tokens": 0, "logprobs": 0})");
  chat("prompt_logprobs", R"({"messages": [{"role": "user", "content": "Hi"}], "prompt_logprobs": 3, )"
                          R"("logprobs": true})");
  completions("refused_top_p_zero", R"({"prompt": "x", "top_p": 0})");
  completions("refused_logit_bias_key", R"({"prompt": "x", "logit_bias": {"-1": 1}})");
  chat("minimal", R"({"model": "tiny", "messages": [{"role": "user", "content": "Hi"}]})");
  chat("stream_logprobs_n",
       R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": )"
       R"("Hello caf\u00e9 \ud83d\ude00"}], "stream": true, "stream_options": {"include_usage": true}, )"
       R"("logprobs": true, "top_logprobs": 2, "max_completion_tokens": 12, "n": 2, "seed": 7, )"
       R"("temperature": 1.2, "stop": "\n"})");
  chat("json_schema",
       R"({"messages": [{"role": "user", "content": "A person, as JSON."}], "max_tokens": 32, )"
       R"("response_format": {"type": "json_schema", "json_schema": {"name": "person", "strict": true, )"
       R"("schema": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}, )"
       R"("age": {"type": "integer"}, "tags": {"type": "array", "items": {"enum": ["a", "b"]}}}, )"
       R"("required": ["name"], "additionalProperties": false}}}})");
  chat("json_object", R"({"messages": [{"role": "user", "content": "JSON please"}], )"
                      R"("response_format": {"type": "json_object"}, "max_tokens": 16, "stream": true})");
  chat("refused_regex_missing",
       R"({"messages": [{"role": "user", "content": "?"}], "response_format": {"type": "regex"}})");
  // The tool's answer comes back as a user turn: tiny-llama's template knows no "tool" role.
  chat("tools",
       R"({"messages": [{"role": "user", "content": "Weather in Z\u00fcrich?"}, {"role": "assistant", )"
       R"("content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": )"
       R"("get_weather", "arguments": "{\"city\": \"Z\u00fcrich\"}"}}]}, {"role": "user", )"
       R"("tool_call_id": "call_1", "name": "get_weather", "content": "Sunny, 24 C"}], "tools": [{"type": )"
       R"("function", "function": {"name": "get_weather", "description": "Current weather", "parameters": )"
       R"({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}], )"
       R"("tool_choice": "auto", "chat_template_kwargs": {"enable_thinking": false}, )"
       R"("add_generation_prompt": true, "parallel_tool_calls": false})",
       kHermes);
  // Replies are made of slices of the body: these carry calls in the served format.
  chat("tools_hermes_reply",
       R"({"messages": [{"role": "user", "content": "Hi <tool_call>{\"name\": \"f\", \"arguments\": )"
       R"({}}</tool_call> <tool_call>{\"name\": \"g\", \"arguments\": {\"a\": [1]}}</tool_call>"}], )"
       R"("tools": [{"type": "function", "function": {"name": "f"}}], "stream": true})",
       kHermes);
  chat("tools_llama3_reply",
       R"({"messages": [{"role": "user", "content": "{\"name\": \"f\", \"parameters\": {\"x\": 1}}; )"
       R"({\"name\": \"g\", \"parameters\": {}}"}], "tools": [{"function": {"name": "f"}}], "n": 2})",
       kLlama3Json);
  chat("tools_required",
       R"({"messages": [{"role": "user", "content": "[{\"name\": \"f\", \"parameters\": {\"x\": 1}}]"}], )"
       R"("tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", )"
       R"("properties": {"x": {"type": "integer"}}, "required": ["x"]}}}, {"type": "function", )"
       R"("function": {"name": "g"}}], "tool_choice": "required", "parallel_tool_calls": false})");
  chat("tools_named_stream",
       R"({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [{"id": "c", )"
       R"("type": "function", "function": {"name": "f", "arguments": ""}}]}, {"role": "tool", )"
       R"("tool_call_id": "c", "content": "1"}], "tools": [{"type": "function", "function": {"name": "f", )"
       R"("parameters": {"type": "object", "properties": {"q": {"enum": ["a", "b"]}}}}}], )"
       R"("tool_choice": {"type": "function", "function": {"name": "f"}}, "stream": true})");
  chat("content_parts_prefill",
       R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "Part one"}, {"type": )"
       R"("text", "text": "part two"}]}, {"role": "assistant", "content": "Sure, "}], )"
       R"("add_generation_prompt": false, "continue_final_message": true, "modalities": ["text"], )"
       R"("stop": ["\n", "END", ""], "logit_bias": {"300": -100}, "presence_penalty": 2})");
  chat("refused_image_part",
       R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})");
  chat("refused_tool_choice_object", R"({"messages": [{"role": "user", "content": "x"}], )"
                                     R"("tool_choice": {"type": "function"}, "tools": []})");
  // Odd but valid: nulls for "not set", a duplicate key (the last wins), escapes, an unknown field
  // nested near the depth limit, numbers in every JSON spelling.
  chat("odd_valid",
       "{\"messages\": [{\"role\": \"user\", \"content\": \"\\u0000 nul \\\"q\\\" \\\\ \\/ \\t\", "
       "\"name\": null}], \"temperature\": null, \"top_p\": 1E0, \"n\": null, \"max_tokens\": 4, "
       "\"max_tokens\": 2, \"min_p\": -0.0, \"seed\": -9223372036854775808, \"logit_bias\": {}, "
       "\"stop\": [], \"tools\": [], \"metadata\": " +
           std::string(200, '[') + "\"]]][[[\"" + std::string(200, ']') + "}");
  chat("refused_too_deep", "{\"messages\": " + std::string(300, '[') + std::string(300, ']') + "}");
}

// ---- fuzz_response_format: [kind: 0 regex, 1 json_schema, 2 choice][text; choices split by '\n'] ----

void response_format_seeds() {
  const std::string target = "fuzz_response_format";
  const auto save = [&](const std::string& name, char kind, const std::string& text) {
    write_seed(target, name, std::string(1, kind) + text);
  };
  constexpr char kRegex = 0, kSchema = 1, kChoice = 2;
  save("regex_classes", kRegex, R"([A-Z][a-z]{1,8}(?: [a-z0-9_]+){0,3}[.!?]|[^\sa-z]\w*)");
  save("regex_unicode", kRegex,
       "caf\\u00e9|\xE6\x97\xA5\xE6\x9C\xAC(?:\xE8\xAA\x9E|\xE4\xBA\xBA)?|\\uD83D\\uDE00+|"
       "[\xCE\xB1-\xCF\x89]{2,4}|[^\\x00-\\x7F]\\.");
  save("regex_counted_repeats", kRegex, R"((?:\d{3}\-){2}\d{4}|x{5,}|(ab){0,3}c?|[01]{8}(?:,[01]{8}){0,3})");
  save("regex_alternations_anchors", kRegex, R"(^ ?(yes|no|maybe|n\/a|(?:un)?known)$)");
  save("regex_escapes", kRegex, R"(\w+@\w+\.(?:com|org)\s?\S*\t\n\x41\/\-\{\}\v\f\0.)");
  save("regex_refused_lookahead", kRegex, "(?=a)b");
  save("schema_nested_optional", kSchema,
       R"({"type": "object", "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 20}, )"
       R"("age": {"type": "integer"}, "score": {"type": ["number", "null"]}, "address": {"type": "object", )"
       R"("properties": {"city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}}, )"
       R"("required": ["city"], "additionalProperties": false}}, "required": ["name"], "title": "person"})");
  save("schema_arrays", kSchema,
       R"({"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", )"
       R"("maxLength": 8}, "minItems": 1, "maxItems": 4, "uniqueItems": false}, "pair": {"prefixItems": )"
       R"([{"type": "integer"}, {"type": "boolean"}], "items": false}, "any": {"type": "array"}, )"
       R"("old": {"items": [{"const": 1}], "additionalItems": {"type": "null"}, "maxItems": 3}}})");
  save("schema_enum_const", kSchema,
       R"({"anyOf": [{"enum": ["red", "gr\"een", 3, 2.5, null, true, {"a": [1, "\u00e9"]}]}, )"
       R"({"const": "caf\u00e9\n"}, {"type": "integer", "enum": [1, 1.0, "x", 7]}]})");
  save("schema_defs_ref", kSchema,
       R"({"$defs": {"point": {"type": "object", "properties": {"x": {"type": "number"}, "y": )"
       R"({"type": "number"}}, "required": ["x", "y"]}}, "definitions": {"label": {"type": "string"}}, )"
       R"("type": "object", "properties": {"from": {"$ref": "#/$defs/point"}, "to": {"$ref": )"
       R"("#/$defs/point"}, "label": {"$ref": "#/definitions/label"}}, "required": ["from", "to"]})");
  save("schema_formats_oneof", kSchema,
       R"({"oneOf": [{"type": "string", "format": "date-time"}, {"type": "string", "format": "uuid"}, )"
       R"({"format": "date"}, {"format": "time"}, {"allOf": [{"type": ["boolean", "integer"]}]}]})");
  save("schema_map_and_any", kSchema,
       R"({"type": "object", "additionalProperties": {"type": "array", "items": {}, "maxItems": 2}})");
  save("schema_any_value", kSchema, "true");
  save("schema_refused_minimum", kSchema, R"({"type": "integer", "minimum": 0})");
  save("choice_words", kChoice, "yes\nno\nmaybe\n");
  save("choice_special_characters", kChoice,
       "a.b\n(c)|d*\n[x]{2}\n\t\x7F\\\ncaf\xC3\xA9 \xF0\x9F\x98\x80\n^$/-+?");
}

// ---- fuzz_tokenizer: [flags][n][n bytes of '\n'-separated stop strings][text] ----

void tokenizer_seeds() {
  const std::string target = "fuzz_tokenizer";
  const auto save = [&](const std::string& name, uint8_t flags, const std::string& stops,
                        const std::string& text) {
    std::string bytes;
    bytes += static_cast<char>(flags);
    bytes += static_cast<char>(stops.size());
    write_seed(target, name, bytes + stops + text);
  };
  save("ascii", 0, "", "Hello world");
  save("ascii_bos_stops", 1, "wor\nd!", "Hello world! Hello again.");
  save("spaces_and_controls", 0, "  ", "  two leading spaces,\ttabs\nand newlines  ");
  save("multibyte_fallback", 0, "\xF0\x9F",
       "caf\xC3\xA9 na\xC3\xAFve \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80\xF0\x9F\x8E\x89");
  save("malformed_utf8", 0, "\xEF\xBF\xBD",
       "a\xFF"
       "b\xC3"
       "c\xE2\x82"
       "d\xED\xA0\x80"
       "e\xF4\x90\x80\x80");
  save("prompt_min_tokens", 0x3C, "o", "one two three four five six seven eight nine ten");
  // Raw ids (little-endian pairs): BOS, EOS, byte pieces of a split character, out-of-range values.
  std::string raw;
  for (unsigned v : {1u, 2u, 0u, 0xFFFFu, 519u, 520u, 100u, 200u, 300u, 400u, 500u, 7u})
    raw += std::string{static_cast<char>(v & 0xFF), static_cast<char>(v >> 8)};
  save("raw_ids", 2, "\n", raw);

  // Longer than the detokenizer's 32-token window, so that it is cut back several times, with
  // multi-byte characters and stop-string prefixes near the cuts. Short inputs alone would leave
  // that to the fuzzer's slowly growing length limit.
  std::string text;
  for (int i = 0; i < 12; ++i)
    text += "The caf\xC3\xA9 on street " + std::to_string(i) + " sells \xE6\x97\xA5 tea \xF0\x9F\x98\x80; ";
  save("long_text_stops", 1, "tea \xF0\x9F\nstreet 1", text);
  // Byte-fallback ids (SentencePiece puts <0x00>..<0xFF> at 3..258) spelling characters split
  // across tokens, and lone or reordered bytes, interleaved with controls and ordinary pieces.
  raw.clear();
  const auto byte_id = [](unsigned b) { return b + 3; };
  for (int i = 0; i < 10; ++i) {
    for (unsigned v : {byte_id(0xE2), byte_id(0x82), 2u, byte_id(0xAC), 300u + i, byte_id(0xF0),
                       byte_id(0x9F), byte_id(0x98), byte_id(0x80), byte_id(0x80), 1u, 400u + i,
                       byte_id(0xEF), byte_id(0xBF), byte_id(0xBD)})
      raw += std::string{static_cast<char>(v & 0xFF), static_cast<char>(v >> 8)};
  }
  save("long_raw_byte_ids", 2 | 4, "\xE2\x82\xAC", raw);
  // The tokenizer.json fixtures' added tokens, with each matching option's surroundings (spaces
  // for lstrip / rstrip, word characters for single_word), and text NFC changes.
  save("added_tokens", 1, "<|eot_id|>\n<|im_end|>",
       "<|begin_of_text|>Hi<|eot_id|> <|im_start|>user\nx <mask> y<sep>  z [W] a[W]b <x>  "
       "<tool_call>{}</tool_call> cafe\xCC\x81! caf\xC3\xA9! <|<|eot_id|>|>");
}

// ---- fuzz_tokenizer_model: tokenizer.model bytes ----

std::string varint(uint64_t v) {
  std::string out;
  do {
    out += static_cast<char>((v & 0x7F) | (v > 0x7F ? 0x80 : 0));
    v >>= 7;
  } while (v);
  return out;
}
std::string field_bytes(uint32_t number, const std::string& bytes) {
  return varint(uint64_t{number} << 3 | 2) + varint(bytes.size()) + bytes;
}
std::string field_varint(uint32_t number, uint64_t v) {
  return varint(uint64_t{number} << 3) + varint(v);
}
std::string field_float(uint32_t number, float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  std::string out = varint(uint64_t{number} << 3 | 5);
  for (int i = 0; i < 4; ++i)
    out += static_cast<char>((bits >> (8 * i)) & 0xFF);
  return out;
}
std::string piece(const std::string& text, float score, int type) {
  return field_bytes(
      1, field_bytes(1, text) + field_float(2, score) + field_varint(3, static_cast<uint64_t>(type)));
}

void tokenizer_model_seeds(const fs::path& committed_model) {
  const std::string target = "fuzz_tokenizer_model";
  std::ifstream in(committed_model, std::ios::binary);
  const std::string committed((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (committed.empty()) {
    std::cerr << "cannot read " << committed_model << "\n";
    std::exit(1);
  }
  write_seed(target, "committed_bpe_byte_fallback", committed);

  // A hand-made BPE model: every piece type, no byte fallback, whitespace options flipped.
  const std::string space = "\xE2\x96\x81";
  std::string m;
  m += piece("<unk>", 0, 2) + piece("<s>", 0, 3) + piece("</s>", 0, 3);
  m += piece(space, -1, 1) + piece("a", -2, 1) + piece("b", -3, 1) + piece(space + "a", -1.5f, 1);
  m += piece("ab", -0.5f, 1) + piece("<sep>", 0, 4) + piece("ba", -0.25f, 5) + piece(space + "ab", -0.1f, 1);
  m += field_bytes(2, field_varint(3, 2) + field_bytes(45, "<unk>") + field_bytes(44, "?"));
  m += field_bytes(3, field_bytes(1, "identity") + field_varint(3, 1) + field_varint(4, 0));
  write_seed(target, "handmade_bpe_all_piece_types", m);
  write_seed(target, "unigram_refused", piece("<unk>", 0, 2) + field_bytes(2, field_varint(3, 1)));
}

}  // namespace

// ---- fuzz_chat_template: [flags][conversation] or [flags|1][template source]\0[conversation] ----
// A conversation is messages separated by '\1', each led by a role byte (0 system, 5 user,
// 2 assistant, 3 tool: the byte modulo 4).

void chat_template_seeds(const fs::path& templates) {
  const std::string target = "fuzz_chat_template";
  const std::string chat = std::string(1, '\0') + "You are terse.\x01" + "\x05" +
                           "Hello {{ not a tag }} \xC3\xA9\x01" + "\x02" + "Hi! </s> <|eot_id|>\x01" +
                           "\x05" + "And now?";
  write_seed(target, "conversation_all_templates", std::string("\x02") + chat);
  write_seed(target, "conversation_roles_do_not_alternate",
             std::string(1, '\0') + "\x05" + "one\x01" + "\x05" + "two\x01" + "\x03" + "tool");
  for (const auto& entry : fs::directory_iterator(templates)) {
    if (entry.path().extension() != ".jinja") continue;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string source((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    write_seed(target, "template_" + entry.path().stem().string(),
               std::string("\x03") + source + '\0' + chat);
  }
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " CORPUS_ROOT (tests/fuzz/corpus)\n";
    return 2;
  }
  g_root = argv[1];
  model_file_seeds();
  request_seeds();
  openai_request_seeds();
  response_format_seeds();
  tokenizer_seeds();
  tokenizer_model_seeds(fs::path(KVSERVE_TEST_DATA) / "tokenizer" / "tokenizer.model");
  chat_template_seeds(fs::path(KVSERVE_TEST_DATA) / "chat_templates");
  std::cout << "seeds written under " << g_root << "\n";
  return 0;
}
