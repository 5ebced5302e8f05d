// The training run of ALE's profile-guided build (deploy/setup.sh): plays each ROM
// given on the command line for a number of frames, through the shim's C ABI, the way
// volley's envs drive it (sticky actions, frameskip 4 as four single-frame acts, a
// grayscale or RGB screen after the last frames of a skip, a reset at the game's end).
// The compiler's profile of this run steers the optimised build; nothing it prints is
// kept.
//
//   volley_ale_pgo_train FRAMES ROM...

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

extern "C" {
void* volley_ale_new(void);
void volley_ale_free(void*);
const char* volley_ale_last_error(void*);
int volley_ale_set_float(void*, const char*, float);
int volley_ale_load_rom(void*, const char*);
int volley_ale_seed(void*, int);
int volley_ale_reset_game(void*);
int volley_ale_act(void*, int, float);
int volley_ale_game_over(void*, int);
int volley_ale_lives(void*);
int volley_ale_screen_width(void*);
int volley_ale_screen_height(void*);
int volley_ale_screen_rgb(void*, uint8_t*, size_t);
int volley_ale_screen_grayscale(void*, uint8_t*, size_t);
int volley_ale_screen_indices(void*, uint8_t*, size_t);
int volley_ale_minimal_action_set(void*, int*, int);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s FRAMES ROM...\n", argv[0]);
    return 2;
  }
  const long frames = std::strtol(argv[1], nullptr, 10);
  uint64_t rng = 0x9e3779b97f4a7c15ull;
  for (int r = 2; r < argc; r++) {
    void* ale = volley_ale_new();
    volley_ale_set_float(ale, "repeat_action_probability", 0.25f);
    if (volley_ale_load_rom(ale, argv[r]) != 0 || volley_ale_seed(ale, r) != 0 ||
        volley_ale_reset_game(ale) != 0) {
      std::fprintf(stderr, "%s: %s\n", argv[r], volley_ale_last_error(ale));
      return 1;
    }
    int actions[18];
    const int n = volley_ale_minimal_action_set(ale, actions, 18);
    const size_t pixels =
        static_cast<size_t>(volley_ale_screen_width(ale)) * volley_ale_screen_height(ale);
    std::vector<uint8_t> screen(pixels * 3);
    long reward = 0, lives = 0;
    for (long f = 0; f < frames; f += 4) {
      rng ^= rng << 13;
      rng ^= rng >> 7;
      rng ^= rng << 17;
      const int a = actions[rng % static_cast<uint64_t>(n)];
      for (int k = 0; k < 4; k++) {
        reward += volley_ale_act(ale, a, 1.0f);
        if (k >= 2) {
          // The ROMs take turns at the screen paths: palette indices (preprocess=dqn),
          // grayscale and RGB.
          if (r % 3 == 0) {
            volley_ale_screen_indices(ale, screen.data(), pixels);
          } else if (r % 3 == 1) {
            volley_ale_screen_grayscale(ale, screen.data(), pixels);
          } else {
            volley_ale_screen_rgb(ale, screen.data(), pixels * 3);
          }
        }
      }
      lives += volley_ale_lives(ale);  // volley reads the lives after every step
      if (volley_ale_game_over(ale, 1)) volley_ale_reset_game(ale);
    }
    std::printf("%s: %ld frames, reward %ld, lives %ld\n", argv[r], frames, reward, lives);
    volley_ale_free(ale);
  }
  return 0;
}
