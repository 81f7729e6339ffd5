// Minimal host-side stand-in for the Arduino core, so sorter.ino compiles and runs under g++ for
// the shared protocol table (docs/protocol_cases.json). Time is driven by the harness.
#pragma once
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

extern unsigned long g_abs_ms, g_boot_ms;
extern std::string g_rx, g_tx;
inline uint32_t millis() { return (uint32_t)(g_abs_ms - g_boot_ms); }   // 32 bits, as on the AVR
inline uint32_t micros() { return millis() * 1000UL; }
inline void noInterrupts() {}
inline void interrupts() {}
inline void pinMode(int, int) {}
inline int analogRead(int) { return 517; }
inline void attachInterrupt(int, void (*)(), int) {}
inline int digitalPinToInterrupt(int p) { return p; }
#define NOINIT   // host build: a plain global keeps its value across the harness's warm resets
#define INPUT_PULLUP 2
#define RISING 3
#define A0 14
void randomSeed(unsigned long s);
long random(long lo, long hi);

struct HostSerial {
  void begin(long) {}
  int available() { return (int)g_rx.size(); }
  int read() {
    if (g_rx.empty()) return -1;
    int c = (unsigned char)g_rx[0];
    g_rx.erase(0, 1);
    return c;
  }
  void println(const char *s) { g_tx += s; g_tx += "\n"; }
};
extern HostSerial Serial;
