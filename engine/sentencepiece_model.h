// SentencePieceModel: the parts of a serialized sentencepiece.ModelProto (tokenizer.model) that
// tokenizing needs. The file is read with a small protobuf wire-format reader of our own, so the engine
// links neither libsentencepiece nor a protobuf runtime (both clash with the server's libprotobuf).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace kvserve {

struct SentencePieceModel {
  // Enum values as sentencepiece_model.proto numbers them.
  enum class PieceType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };
  enum class ModelType { kUnigram = 1, kBpe = 2, kWord = 3, kChar = 4 };

  struct Piece {
    std::string text;
    float score = 0.0f;
    PieceType type = PieceType::kNormal;
  };

  std::vector<Piece> pieces;  // index = token id

  // TrainerSpec (defaults are the proto's).
  ModelType model_type = ModelType::kUnigram;
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  std::string unk_surface = " \xE2\x81\x87 ";  // what <unk> decodes to: " ⁇ "
  std::string unk_piece = "<unk>";
  std::string bos_piece = "<s>";
  std::string eos_piece = "</s>";

  // NormalizerSpec (defaults are the proto's).
  std::string normalizer_name;
  std::string precompiled_charsmap;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;

  // DenormalizerSpec: only its rules matter, and only to refuse them.
  std::string denormalizer_charsmap;
};

// Reads and parses `path`. Throws ModelLoadError (engine/model.h) naming the file when it is missing,
// unreadable, truncated or otherwise not a well-formed ModelProto. Says nothing about whether the model
// is one the tokenizer supports: that is the tokenizer's call.
SentencePieceModel read_sentencepiece_model(const std::filesystem::path& path);

}  // namespace kvserve
