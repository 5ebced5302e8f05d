// A C ABI around ale::ALEInterface, for volley's Rust side (common/src/env/ale/ffi.rs),
// which loads the library at run time.
//
// deploy/setup.sh compiles this file on the user's machine together with ALE's sources
// from the pinned ale-py sdist into .deps/ale/libvolley_ale.so. ALE (GPL-2.0) is never
// part of volley's repository or binaries: only this file is.
//
// Conventions: every function takes the handle made by volley_ale_new. Functions that
// can fail return 0 on success and -1 on failure, with the reason in
// volley_ale_last_error; no C++ exception crosses this boundary, and no path here
// reaches ALE's std::exit on a missing or unknown ROM. Everything that needs a game
// fails until volley_ale_load_rom has succeeded. A handle is used by one thread at a
// time; separate handles are independent.

#include <cstddef>
#include <algorithm>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include "ale/ale_interface.hpp"
#include "ale/common/Log.hpp"

// Bumped whenever a signature or meaning below changes; ffi.rs checks it.
#define VOLLEY_ALE_ABI 2

namespace {

struct Handle {
  ale::ALEInterface ale;
  std::string error;
  bool loaded = false;
};

int fail(Handle* h, const std::string& what) {
  h->error = what;
  return -1;
}

// Runs f, turning exceptions into -1 and a message.
template <typename F>
int guarded(Handle* h, const char* what, F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    return fail(h, std::string(what) + ": " + e.what());
  } catch (...) {
    return fail(h, std::string(what) + ": unknown C++ exception");
  }
}

int need_rom(Handle* h, const char* what) {
  return h->loaded ? 0 : fail(h, std::string(what) + ": no ROM loaded");
}

// Copies up to cap values of v to out; returns the full count.
template <typename T>
int copy_out(const std::vector<T>& v, int* out, int cap) {
  for (size_t i = 0; i < v.size() && static_cast<int>(i) < cap; i++) {
    out[i] = static_cast<int>(v[i]);
  }
  return static_cast<int>(v.size());
}

}  // namespace

extern "C" {

int volley_ale_abi_version(void) { return VOLLEY_ALE_ABI; }

// ALE's version, "0.12.1".
const char* volley_ale_version(void) { return ALE_VERSION; }

// A new ALEInterface with ALE's logging cut to errors; null if it could not be made.
void* volley_ale_new(void) {
  try {
    ale::Logger::setMode(ale::Logger::Error);
    return new Handle();
  } catch (...) {
    return nullptr;
  }
}

void volley_ale_free(void* p) { delete static_cast<Handle*>(p); }

// The reason of the last failure on this handle, valid until the next call on it.
const char* volley_ale_last_error(void* p) { return static_cast<Handle*>(p)->error.c_str(); }

// Settings (ALE's names: "random_seed", "repeat_action_probability", ...). They take
// effect at the next volley_ale_load_rom.
int volley_ale_set_int(void* p, const char* key, int value) {
  auto* h = static_cast<Handle*>(p);
  return guarded(h, "setInt", [&] { h->ale.setInt(key, value); return 0; });
}

int volley_ale_set_float(void* p, const char* key, float value) {
  auto* h = static_cast<Handle*>(p);
  return guarded(h, "setFloat", [&] { h->ale.setFloat(key, value); return 0; });
}

int volley_ale_set_bool(void* p, const char* key, int value) {
  auto* h = static_cast<Handle*>(p);
  return guarded(h, "setBool", [&] { h->ale.setBool(key, value != 0); return 0; });
}

int volley_ale_set_string(void* p, const char* key, const char* value) {
  auto* h = static_cast<Handle*>(p);
  return guarded(h, "setString", [&] { h->ale.setString(key, value); return 0; });
}

int volley_ale_get_int(void* p, const char* key, int* out) {
  auto* h = static_cast<Handle*>(p);
  return guarded(h, "getInt", [&] { *out = h->ale.getInt(key); return 0; });
}

int volley_ale_get_float(void* p, const char* key, float* out) {
  auto* h = static_cast<Handle*>(p);
  return guarded(h, "getFloat", [&] { *out = h->ale.getFloat(key); return 0; });
}

// Loads the ROM at path with the current settings and resets the game; the mode and
// difficulty go back to the game's defaults. The ROM's MD5 must be one of ALE's games
// (ALE itself would also take an unknown ROM under a known file name, with a warning);
// the sdist's combat, joust, maze_craze and warlords have none.
int volley_ale_load_rom(void* p, const char* path) {
  auto* h = static_cast<Handle*>(p);
  return guarded(h, "loadROM", [&] {
    std::filesystem::path rom(path);
    if (!std::filesystem::is_regular_file(rom)) {
      return fail(h, std::string("loadROM: no ROM file at ") + path);
    }
    if (!ale::ALEInterface::isSupportedROM(rom)) {
      return fail(h, std::string("loadROM: ") + path +
                         " is not a game ALE supports (no game settings for its MD5)");
    }
    h->loaded = false;
    h->ale.loadROM(rom);
    h->loaded = true;
    return 0;
  });
}

// Seeds ALE's RNG (sticky actions) the way ale-py's AtariEnv.seed_game + load_game do:
// sets "random_seed" and reloads the current ROM, keeping the mode and difficulty that
// were set. The next volley_ale_reset_game starts the seeded episode.
int volley_ale_seed(void* p, int seed) {
  auto* h = static_cast<Handle*>(p);
  if (need_rom(h, "seed") != 0) return -1;
  return guarded(h, "seed", [&] {
    const ale::game_mode_t mode = h->ale.getMode();
    const ale::difficulty_t difficulty = h->ale.getDifficulty();
    h->ale.setInt("random_seed", seed);
    h->loaded = false;
    h->ale.loadROM();
    h->loaded = true;
    h->ale.setMode(mode);
    h->ale.setDifficulty(difficulty);
    return 0;
  });
}

int volley_ale_reset_game(void* p) {
  auto* h = static_cast<Handle*>(p);
  if (need_rom(h, "reset_game") != 0) return -1;
  return guarded(h, "reset_game", [&] { h->ale.reset_game(); return 0; });
}

// One emulator frame (ALE's frame_skip setting, 1 by default) with action (an
// ale::Action below 18; the caller checks it); returns the frame's reward, 0 without a
// ROM.
int volley_ale_act(void* p, int action, float paddle_strength) {
  auto* h = static_cast<Handle*>(p);
  if (!h->loaded) return 0;
  return h->ale.act(static_cast<ale::Action>(action), paddle_strength);
}

// 1 when the episode is over: the game ended, or (with_truncation) it was truncated.
int volley_ale_game_over(void* p, int with_truncation) {
  auto* h = static_cast<Handle*>(p);
  return h->loaded && h->ale.game_over(with_truncation != 0) ? 1 : 0;
}

// 1 when the episode was cut (max_num_frames_per_episode, truncate_on_loss_of_life).
int volley_ale_game_truncated(void* p) {
  auto* h = static_cast<Handle*>(p);
  return h->loaded && h->ale.game_truncated() ? 1 : 0;
}

int volley_ale_lives(void* p) {
  auto* h = static_cast<Handle*>(p);
  return h->loaded ? h->ale.lives() : 0;
}

// Frames emulated since the ROM was loaded, and since the episode began.
int volley_ale_frame_number(void* p) {
  auto* h = static_cast<Handle*>(p);
  return h->loaded ? h->ale.getFrameNumber() : 0;
}

int volley_ale_episode_frame_number(void* p) {
  auto* h = static_cast<Handle*>(p);
  return h->loaded ? h->ale.getEpisodeFrameNumber() : 0;
}

int volley_ale_screen_width(void* p) {
  auto* h = static_cast<Handle*>(p);
  return h->loaded ? static_cast<int>(h->ale.getScreen().width()) : 0;
}

int volley_ale_screen_height(void* p) {
  auto* h = static_cast<Handle*>(p);
  return h->loaded ? static_cast<int>(h->ale.getScreen().height()) : 0;
}

// The screen as height x width x 3 RGB bytes, row-major; len must be exactly that.
int volley_ale_screen_rgb(void* p, uint8_t* dst, size_t len) {
  auto* h = static_cast<Handle*>(p);
  if (need_rom(h, "getScreenRGB") != 0) return -1;
  const ale::ALEScreen& s = h->ale.getScreen();
  const size_t n = s.width() * s.height();
  if (len != 3 * n) return fail(h, "getScreenRGB: buffer of " + std::to_string(len) +
                                       " bytes, expected " + std::to_string(3 * n));
  h->ale.theOSystem->colourPalette().applyPaletteRGB(dst, s.getArray(), n);
  return 0;
}

// The screen as height x width luminance bytes; len must be exactly that.
int volley_ale_screen_grayscale(void* p, uint8_t* dst, size_t len) {
  auto* h = static_cast<Handle*>(p);
  if (need_rom(h, "getScreenGrayscale") != 0) return -1;
  const ale::ALEScreen& s = h->ale.getScreen();
  const size_t n = s.width() * s.height();
  if (len != n) return fail(h, "getScreenGrayscale: buffer of " + std::to_string(len) +
                                   " bytes, expected " + std::to_string(n));
  h->ale.theOSystem->colourPalette().applyPaletteGrayscale(dst, s.getArray(), n);
  return 0;
}

// The screen as height x width palette indices (what the TIA drew), row-major; len must
// be exactly that. volley_ale_grayscale_palette maps them to getScreenGrayscale's bytes.
int volley_ale_screen_indices(void* p, uint8_t* dst, size_t len) {
  auto* h = static_cast<Handle*>(p);
  if (need_rom(h, "getScreen") != 0) return -1;
  const ale::ALEScreen& s = h->ale.getScreen();
  const size_t n = s.width() * s.height();
  if (len != n) return fail(h, "getScreen: buffer of " + std::to_string(len) +
                                   " bytes, expected " + std::to_string(n));
  const uint8_t* src = s.getArray();
  std::copy(src, src + n, dst);
  return 0;
}

// The luminance getScreenGrayscale gives each palette index, into 256 bytes (len must
// be 256). The TIA's indices are even; ALE's own conversion of index 255 would read
// past its palette, so that one is 0.
int volley_ale_grayscale_palette(void* p, uint8_t* dst, size_t len) {
  auto* h = static_cast<Handle*>(p);
  if (need_rom(h, "grayscale palette") != 0) return -1;
  if (len != 256) return fail(h, "grayscale palette: buffer of " + std::to_string(len) +
                                     " bytes, expected 256");
  uint8_t index[255];
  for (int i = 0; i < 255; i++) index[i] = static_cast<uint8_t>(i);
  h->ale.theOSystem->colourPalette().applyPaletteGrayscale(dst, index, 255);
  dst[255] = 0;
  return 0;
}

// The 128 bytes of the console's RAM; len must be 128.
int volley_ale_ram(void* p, uint8_t* dst, size_t len) {
  auto* h = static_cast<Handle*>(p);
  if (need_rom(h, "getRAM") != 0) return -1;
  const ale::ALERAM& ram = h->ale.getRAM();
  if (len != ram.size()) return fail(h, "getRAM: buffer of " + std::to_string(len) +
                                            " bytes, expected " + std::to_string(ram.size()));
  for (size_t i = 0; i < len; i++) dst[i] = ram.get(static_cast<unsigned>(i));
  return 0;
}

// Action sets, modes and difficulties: the full count (-1 on failure), of which the
// first min(count, cap) values are written to out.
int volley_ale_minimal_action_set(void* p, int* out, int cap) {
  auto* h = static_cast<Handle*>(p);
  if (need_rom(h, "getMinimalActionSet") != 0) return -1;
  return guarded(h, "getMinimalActionSet",
                 [&] { return copy_out(h->ale.getMinimalActionSet(), out, cap); });
}

int volley_ale_legal_action_set(void* p, int* out, int cap) {
  auto* h = static_cast<Handle*>(p);
  if (need_rom(h, "getLegalActionSet") != 0) return -1;
  return guarded(h, "getLegalActionSet",
                 [&] { return copy_out(h->ale.getLegalActionSet(), out, cap); });
}

int volley_ale_available_modes(void* p, int* out, int cap) {
  auto* h = static_cast<Handle*>(p);
  if (need_rom(h, "getAvailableModes") != 0) return -1;
  return guarded(h, "getAvailableModes",
                 [&] { return copy_out(h->ale.getAvailableModes(), out, cap); });
}

int volley_ale_available_difficulties(void* p, int* out, int cap) {
  auto* h = static_cast<Handle*>(p);
  if (need_rom(h, "getAvailableDifficulties") != 0) return -1;
  return guarded(h, "getAvailableDifficulties",
                 [&] { return copy_out(h->ale.getAvailableDifficulties(), out, cap); });
}

// Mode and difficulty take effect at the next volley_ale_reset_game; -1 for a value
// the game does not have.
int volley_ale_set_mode(void* p, int mode) {
  auto* h = static_cast<Handle*>(p);
  if (need_rom(h, "setMode") != 0) return -1;
  return guarded(h, "setMode", [&] {
    h->ale.setMode(static_cast<ale::game_mode_t>(mode));
    return 0;
  });
}

int volley_ale_set_difficulty(void* p, int difficulty) {
  auto* h = static_cast<Handle*>(p);
  if (need_rom(h, "setDifficulty") != 0) return -1;
  return guarded(h, "setDifficulty", [&] {
    h->ale.setDifficulty(static_cast<ale::difficulty_t>(difficulty));
    return 0;
  });
}

}  // extern "C"
