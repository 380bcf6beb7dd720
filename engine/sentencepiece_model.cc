#include "engine/sentencepiece_model.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string_view>
#include <system_error>

#include "engine/model.h"

namespace kvserve {
namespace {

// A malformed message. Caught at the top and turned into a ModelLoadError that names the file.
struct WireError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

struct Field {
  uint32_t number = 0;
  uint32_t wire_type = 0;
  uint64_t varint = 0;    // kVarint
  uint32_t fixed32 = 0;   // kFixed32
  std::string_view data;  // kLengthDelimited
};

// Protobuf wire format, every read bounds-checked against the enclosing message.
class WireReader {
 public:
  explicit WireReader(std::string_view message) : rest_(message) {}

  // The next field, or false at the end of the message.
  bool next(Field& f) {
    if (rest_.empty()) return false;
    const uint64_t key = read_varint();
    f.number = static_cast<uint32_t>(key >> 3);
    f.wire_type = static_cast<uint32_t>(key & 7);
    if (f.number == 0 || key >> 32 != 0) throw WireError("invalid field key");
    switch (f.wire_type) {
      case kVarint:
        f.varint = read_varint();
        break;
      case kFixed64:
        take(8);
        break;
      case kLengthDelimited: {
        const uint64_t len = read_varint();
        if (len > rest_.size()) throw WireError("length-delimited field runs past the end of its message");
        f.data = take(static_cast<size_t>(len));
        break;
      }
      case kFixed32: {
        const std::string_view b = take(4);
        // Little-endian on the wire, whatever the host is.
        f.fixed32 = 0;
        for (int i = 3; i >= 0; --i)
          f.fixed32 = (f.fixed32 << 8) | static_cast<unsigned char>(b[static_cast<size_t>(i)]);
        break;
      }
      default:  // groups (3, 4) are not used by ModelProto; 6 and 7 do not exist
        throw WireError("unsupported wire type " + std::to_string(f.wire_type));
    }
    return true;
  }

 private:
  uint64_t read_varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (rest_.empty()) throw WireError("truncated varint");
      const auto b = static_cast<unsigned char>(rest_.front());
      rest_.remove_prefix(1);
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) return v;
    }
    throw WireError("varint longer than 10 bytes");
  }

  std::string_view take(size_t n) {
    if (n > rest_.size()) throw WireError("field runs past the end of its message");
    const std::string_view out = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return out;
  }

  std::string_view rest_;
};

void expect_type(const Field& f, WireType type, const char* what) {
  if (f.wire_type != type) throw WireError(std::string(what) + " has the wrong wire type");
}

bool as_bool(const Field& f, const char* what) {
  expect_type(f, kVarint, what);
  return f.varint != 0;
}

std::string as_string(const Field& f, const char* what) {
  expect_type(f, kLengthDelimited, what);
  return std::string(f.data);
}

SentencePieceModel::Piece parse_piece(std::string_view message) {
  SentencePieceModel::Piece piece;
  WireReader r(message);
  Field f;
  while (r.next(f)) {
    if (f.number == 1) {
      piece.text = as_string(f, "piece");
    } else if (f.number == 2) {
      expect_type(f, kFixed32, "score");
      std::memcpy(&piece.score, &f.fixed32, sizeof piece.score);
    } else if (f.number == 3) {
      expect_type(f, kVarint, "type");
      if (f.varint < 1 || f.varint > 6) throw WireError("unknown piece type " + std::to_string(f.varint));
      piece.type = static_cast<SentencePieceModel::PieceType>(f.varint);
    }
  }
  return piece;
}

void parse_trainer_spec(std::string_view message, SentencePieceModel& m) {
  WireReader r(message);
  Field f;
  while (r.next(f)) {
    switch (f.number) {
      case 3:
        expect_type(f, kVarint, "model_type");
        if (f.varint < 1 || f.varint > 4) throw WireError("unknown model type " + std::to_string(f.varint));
        m.model_type = static_cast<SentencePieceModel::ModelType>(f.varint);
        break;
      case 24:
        m.treat_whitespace_as_suffix = as_bool(f, "treat_whitespace_as_suffix");
        break;
      case 35:
        m.byte_fallback = as_bool(f, "byte_fallback");
        break;
      case 44:
        m.unk_surface = as_string(f, "unk_surface");
        break;
      case 45:
        m.unk_piece = as_string(f, "unk_piece");
        break;
      case 46:
        m.bos_piece = as_string(f, "bos_piece");
        break;
      case 47:
        m.eos_piece = as_string(f, "eos_piece");
        break;
      default:
        break;
    }
  }
}

void parse_normalizer_spec(std::string_view message, SentencePieceModel& m) {
  WireReader r(message);
  Field f;
  while (r.next(f)) {
    switch (f.number) {
      case 1:
        m.normalizer_name = as_string(f, "normalizer name");
        break;
      case 2:
        m.precompiled_charsmap = as_string(f, "precompiled_charsmap");
        break;
      case 3:
        m.add_dummy_prefix = as_bool(f, "add_dummy_prefix");
        break;
      case 4:
        m.remove_extra_whitespaces = as_bool(f, "remove_extra_whitespaces");
        break;
      case 5:
        m.escape_whitespaces = as_bool(f, "escape_whitespaces");
        break;
      default:
        break;
    }
  }
}

std::string denormalizer_charsmap(std::string_view message) {
  WireReader r(message);
  Field f;
  std::string charsmap;
  while (r.next(f)) {
    if (f.number == 2) charsmap = as_string(f, "denormalizer precompiled_charsmap");
  }
  return charsmap;
}

SentencePieceModel parse_model(std::string_view bytes) {
  SentencePieceModel m;
  WireReader r(bytes);
  Field f;
  while (r.next(f)) {
    switch (f.number) {
      case 1:
        expect_type(f, kLengthDelimited, "pieces");
        m.pieces.push_back(parse_piece(f.data));
        break;
      case 2:
        expect_type(f, kLengthDelimited, "trainer_spec");
        parse_trainer_spec(f.data, m);
        break;
      case 3:
        expect_type(f, kLengthDelimited, "normalizer_spec");
        parse_normalizer_spec(f.data, m);
        break;
      case 5:
        expect_type(f, kLengthDelimited, "denormalizer_spec");
        m.denormalizer_charsmap = denormalizer_charsmap(f.data);
        break;
      default:
        break;
    }
  }
  return m;
}

}  // namespace

SentencePieceModel read_sentencepiece_model(const std::filesystem::path& path) {
  const std::string hint = ": pass the tokenizer.model file that ships with the model";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw ModelLoadError("tokenizer model " + path.string() + " does not exist or is not a file" + hint);
  }
  const auto size = std::filesystem::file_size(path, ec);
  std::string bytes(ec ? 0 : static_cast<size_t>(size), '\0');
  std::ifstream in(path, std::ios::binary);
  if (ec || !in || !in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()))) {
    throw ModelLoadError("tokenizer model " + path.string() + " could not be read" + hint);
  }
  try {
    return parse_model(bytes);
  } catch (const WireError& e) {
    throw ModelLoadError("tokenizer model " + path.string() + " is not a valid SentencePiece model (" +
                         e.what() + ")" + hint);
  }
}

}  // namespace kvserve
